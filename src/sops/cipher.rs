//! One encrypted SOPS value, `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`: parsed, and
//! opened with AES-256-GCM under the file's data key. SOPS seals every value with a
//! 32-byte IV and the value's key path (`a:b:c:`) as additional data, so a value moved to
//! another key fails to open just as a changed one does.

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha512};

use super::node::{Node, Plain};

/// AES-256-GCM with the 32-byte nonces SOPS uses.
type SopsGcm = AesGcm<Aes256, U32>;

const IV_BYTES: usize = 32;
const TAG_BYTES: usize = 16;

/// The parts of one `ENC[…]` value.
#[derive(Debug)]
pub struct Sealed {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    /// `str`, `int`, `float`, `bool`, `bytes` (`time` and `comment` are refused: pontoon
    /// reads neither).
    pub kind: String,
}

/// Parses `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`. The error says what is wrong with
/// the form, never the text (which is ciphertext, but a hand-edited one may not be).
pub fn parse(s: &str) -> Result<Sealed, String> {
    let inner = s
        .strip_prefix("ENC[AES256_GCM,")
        .and_then(|r| r.strip_suffix(']'))
        .ok_or("not of the form ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]")?;
    let mut data = None;
    let mut iv = None;
    let mut tag = None;
    let mut kind = None;
    for part in inner.split(',') {
        let (name, value) = part.split_once(':').ok_or("a part without `name:`")?;
        let slot = match name {
            "data" => &mut data,
            "iv" => &mut iv,
            "tag" => &mut tag,
            "type" => &mut kind,
            _ => return Err(format!("unknown part `{name}`")),
        };
        *slot = Some(value);
    }
    let decode = |what: &str, v: Option<&str>| -> Result<Vec<u8>, String> {
        let v = v.ok_or_else(|| format!("no `{what}`"))?;
        STANDARD
            .decode(v)
            .map_err(|_| format!("`{what}` is not base64"))
    };
    let sealed = Sealed {
        data: decode("data", data)?,
        iv: decode("iv", iv)?,
        tag: decode("tag", tag)?,
        kind: kind.ok_or("no `type`")?.to_owned(),
    };
    if sealed.iv.len() != IV_BYTES {
        return Err(format!(
            "an iv of {} bytes (SOPS writes {IV_BYTES})",
            sealed.iv.len()
        ));
    }
    if sealed.tag.len() != TAG_BYTES {
        return Err(format!(
            "a tag of {} bytes, not {TAG_BYTES}",
            sealed.tag.len()
        ));
    }
    if !matches!(
        sealed.kind.as_str(),
        "str" | "int" | "float" | "bool" | "bytes"
    ) {
        return Err(format!(
            "type `{}`, which pontoon does not read",
            sealed.kind
        ));
    }
    Ok(sealed)
}

/// Opens a sealed value with the data key; `aad` is its key path as SOPS writes it. A
/// changed value, tag, path or key all fail the same way: the GCM tag does not verify.
pub fn open(sealed: &Sealed, key: &[u8; 32], aad: &str) -> Result<Plain, String> {
    let gcm = SopsGcm::new(key.into());
    let mut msg = Vec::with_capacity(sealed.data.len() + TAG_BYTES);
    msg.extend_from_slice(&sealed.data);
    msg.extend_from_slice(&sealed.tag);
    gcm.decrypt(
        Nonce::<U32>::from_slice(&sealed.iv),
        Payload {
            msg: &msg,
            aad: aad.as_bytes(),
        },
    )
    .map(Plain::new)
    .map_err(|_| "it does not verify: changed, moved, or sealed with another data key".to_owned())
}

/// The value a decrypted text stands for, by the type SOPS recorded.
pub fn typed(kind: &str, plain: Plain) -> Result<Node, String> {
    let text = || std::str::from_utf8(plain.expose()).map_err(|_| "not UTF-8".to_owned());
    match kind {
        "str" | "bytes" => Ok(Node::Str(plain)),
        "int" => text()?
            .parse::<i64>()
            .map(Node::Int)
            .map_err(|_| "not an integer".to_owned()),
        "float" => text()?
            .parse::<f64>()
            .map(Node::Float)
            .map_err(|_| "not a number".to_owned()),
        // Go's strconv.ParseBool, which SOPS decrypts booleans with.
        "bool" => match text()? {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Node::Bool(true)),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Node::Bool(false)),
            _ => Err("not a boolean".to_owned()),
        },
        other => Err(format!("type `{other}`, which pontoon does not read")),
    }
}

/// Adds a plaintext value to the MAC the way SOPS's `ToBytes` writes it: integers in
/// decimal, floats in the shortest form without an exponent, booleans as `True`/`False`.
/// Null is skipped (SOPS never visits it).
pub fn feed_mac(node: &Node, hash: &mut Sha512) {
    match node {
        Node::Null | Node::List(_) | Node::Map(_) => {}
        Node::Bool(true) => hash.update(b"True"),
        Node::Bool(false) => hash.update(b"False"),
        Node::Int(i) => hash.update(i.to_string()),
        Node::UInt(u) => hash.update(u.to_string()),
        // Rust's `Display` of an f64 is the shortest text that reads back the same and
        // never uses an exponent: Go's FormatFloat(f, 'f', -1, 64).
        Node::Float(f) => hash.update(f.to_string()),
        Node::Str(s) => hash.update(s.expose()),
    }
}
