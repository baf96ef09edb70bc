//! The format against files the real `sops` (3.13.3) wrote, with a test-only age key
//! (`testdata/test-key.txt`): each decrypts to what `sops -d` printed for it, and each way
//! of breaking one (a value, the MAC, the key) is an error that says which.

use serde_json::{Value, json};

use super::*;

const KEY: &str = include_str!("testdata/test-key.txt");
const OTHER_KEY: &str = include_str!("testdata/other-key.txt");

fn keyring() -> Keyring {
    let mut k = Keyring::new();
    k.add("team-a", KEY).unwrap();
    k.add("team-b", OTHER_KEY).unwrap();
    k
}

fn yaml(text: &str) -> Result<SopsFile, SopsError> {
    let docs: Vec<&str> = text.split("\n---\n").collect();
    SopsFile::from_yaml_documents(&docs)
}

fn decrypt_yaml(text: &str) -> Result<Vec<Value>, SopsError> {
    let nodes = yaml(text)?.decrypt(&keyring(), "team-a")?;
    Ok(nodes.iter().map(|n| n.to_json("").unwrap()).collect())
}

#[test]
fn every_value_type_decrypts_to_what_sops_printed() {
    let docs = decrypt_yaml(include_str!("testdata/values.yaml")).unwrap();
    // `sops -d --output-type json testdata/values.yaml`
    let want = json!({
        "password": "hunter2-correct-horse",
        "port": 5432,
        "ratio": 0.25,
        "negative": -17,
        "enabled": true,
        "disabled": false,
        "empty": "",
        "nothing": null,
        "unicode": "pässwörd ✓",
        "multiline": "line one\nline two\n",
        "nested": {"user": "admin", "tokens": ["first-token", "second-token", {"name": "inner", "value": 42}]},
        "note_unencrypted": "visible in the file"
    });
    assert_eq!(docs, [want]);
}

#[test]
fn json_multi_document_regex_and_mac_only_files_decrypt() {
    let file = SopsFile::from_json(include_str!("testdata/values.json")).unwrap();
    let json: Vec<Value> = file
        .decrypt(&keyring(), "team-a")
        .unwrap()
        .iter()
        .map(|n| n.to_json("").unwrap())
        .collect();
    assert_eq!(
        json,
        [
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                "stringData": {"password": "json-secret-value", "port": "5432"},
                "count": 3, "flag": false})
        ]
    );
    for (text, names) in [
        (include_str!("testdata/multi.yaml"), ["first", "second"]),
        (include_str!("testdata/regex.yaml"), ["first", "second"]),
    ] {
        let docs = decrypt_yaml(text).unwrap();
        assert_eq!(docs.len(), 2);
        for (doc, name) in docs.iter().zip(names) {
            assert_eq!(doc["metadata"]["name"], name);
            assert_eq!(doc["stringData"]["token"], format!("{name}-document-token"));
        }
    }
    let docs = decrypt_yaml(include_str!("testdata/maconly.yaml")).unwrap();
    assert_eq!(
        docs,
        [json!({"password": "mac-only-secret", "user_plain": "shown", "count_plain": 7})]
    );
}

#[test]
fn a_binary_file_decrypts_to_its_exact_bytes() {
    let file = SopsFile::from_json(include_str!("testdata/binary.json")).unwrap();
    let docs = file.decrypt(&keyring(), "team-a").unwrap();
    let Some(Node::Str(bytes)) = docs[0].get("data") else {
        panic!("no data: {docs:?}");
    };
    assert_eq!(bytes.expose(), include_bytes!("testdata/binary.plain"));
    // Not UTF-8: it cannot become a JSON string, and the error says where, not what.
    let e = docs[0].to_json("").unwrap_err();
    assert_eq!(e, "data: the decrypted value is not UTF-8 text");
}

#[test]
fn a_tampered_value_is_an_error_naming_its_path() {
    let text = include_str!("testdata/values.yaml");
    // Another value's ciphertext under `password`: sealed for another path.
    let port = text.lines().find_map(|l| l.strip_prefix("port: ")).unwrap();
    let pw = text
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap();
    let moved = text.replacen(pw, port, 1);
    let e = decrypt_yaml(&moved).unwrap_err();
    assert!(
        matches!(&e, SopsError::Value { path, .. } if path == "password"),
        "{e}"
    );
    // One bit of the data flipped.
    let data = pw.split("data:").nth(1).unwrap().split(',').next().unwrap();
    let mut flipped = data.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let changed = text.replacen(data, std::str::from_utf8(&flipped).unwrap(), 1);
    let e = decrypt_yaml(&changed).unwrap_err();
    assert_eq!(
        e.to_string().split(':').next(),
        Some("the value at `password` cannot be decrypted")
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn a_changed_unencrypted_value_or_mac_is_a_mac_mismatch() {
    let text = include_str!("testdata/values.yaml");
    let changed = text.replace("visible in the file", "changed by hand");
    assert_eq!(decrypt_yaml(&changed).unwrap_err(), SopsError::Mac);
    // A value removed.
    let removed = text.replace("negative: ", "#negative: ");
    assert_eq!(decrypt_yaml(&removed).unwrap_err(), SopsError::Mac);
    // The MAC of another file.
    let mac = |t: &str| {
        t.lines()
            .find_map(|l| l.trim().strip_prefix("mac: "))
            .unwrap()
            .to_owned()
    };
    let other = include_str!("testdata/multi.yaml");
    let swapped = text.replace(&mac(text), &mac(other));
    assert_eq!(decrypt_yaml(&swapped).unwrap_err(), SopsError::Mac);
    // lastmodified is the MAC's additional data.
    let redated = text.replace("lastmodified: \"2026", "lastmodified: \"2025");
    assert_eq!(decrypt_yaml(&redated).unwrap_err(), SopsError::Mac);
}

#[test]
fn another_teams_key_is_an_error_naming_that_key_and_no_key_material() {
    let file = yaml(include_str!("testdata/values.yaml")).unwrap();
    let e = file.decrypt(&keyring(), "team-b").unwrap_err().to_string();
    assert_eq!(
        e,
        "it is encrypted for the key `team-a`, not for `team-b`, the key that decrypts this team's files"
    );
    let mut only_b = Keyring::new();
    only_b.add("team-b", OTHER_KEY).unwrap();
    let e = file.decrypt(&only_b, "team-b").unwrap_err().to_string();
    assert_eq!(
        e,
        "it is not encrypted for the key `team-b`, nor for any key this daemon holds"
    );
    assert!(!e.contains("AGE-SECRET-KEY"));
    let e = file.decrypt(&only_b, "missing").unwrap_err();
    assert!(matches!(e, SopsError::NoKey(_)), "{e}");
}

#[test]
fn pgp_or_kms_only_files_and_key_groups_are_refused_by_name() {
    let text = include_str!("testdata/values.yaml");
    let start = text.find("    age:\n").unwrap();
    let end = text.find("    lastmodified:").unwrap();
    let pgp = format!(
        "{}    pgp:\n        - fp: 0123456789ABCDEF\n          created_at: \"2026-01-01T00:00:00Z\"\n          enc: x\n{}",
        &text[..start],
        &text[end..]
    );
    let e = yaml(&pgp).unwrap_err();
    assert_eq!(e, SopsError::Unsupported("pgp".into()));
    assert!(e.to_string().contains("age keys only"), "{e}");
    let groups = text.replace(
        "    lastmodified:",
        "    key_groups:\n        - age: []\n    lastmodified:",
    );
    assert!(matches!(yaml(&groups).unwrap_err(), SopsError::Feature(_)));
}

#[test]
fn structure_is_checked_without_a_key() {
    let text = include_str!("testdata/values.yaml");
    let file = yaml(text).unwrap();
    assert_eq!(
        file.recipients(),
        ["age12st0qhlu03jqqveq3q97wgcln847t2t0httdhjwd7rl5964tu5rqss5hph"]
    );
    let placeholders: Vec<Value> = file
        .placeholders()
        .iter()
        .map(|n| n.to_json("").unwrap())
        .collect();
    assert_eq!(placeholders[0]["password"], "");
    assert_eq!(placeholders[0]["port"], 0);
    assert_eq!(placeholders[0]["enabled"], false);
    assert_eq!(placeholders[0]["note_unencrypted"], "visible in the file");
    // A value that should be encrypted but is plain text: found without a key.
    let plain = text.replacen("password: ENC[", "password: xENC[", 1);
    let e = yaml(&plain).unwrap_err();
    assert!(
        matches!(&e, SopsError::Value { path, .. } if path == "password"),
        "{e}"
    );
    assert!(matches!(
        yaml("a: 1\n").unwrap_err(),
        SopsError::Structure(_)
    ));
}

#[test]
fn plaintext_and_keys_never_debug_print() {
    let docs = yaml(include_str!("testdata/values.yaml"))
        .unwrap()
        .decrypt(&keyring(), "team-a")
        .unwrap();
    let shown = format!("{docs:?} {:?}", keyring());
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("AGE-SECRET-KEY"), "{shown}");
    assert!(shown.contains("team-a"), "{shown}");
}

#[test]
fn a_bad_identity_file_names_the_key_and_line_only() {
    let mut k = Keyring::new();
    let e = k
        .add("x", "# comment\nAGE-SECRET-KEY-1NOTAKEY\n")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "key `x`: line 2 is not an age identity (AGE-SECRET-KEY-1…)"
    );
    assert!(k.add("y", "# nothing\n").is_err());
}
