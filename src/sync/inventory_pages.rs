//! How an inventory's entries are encoded in ConfigMaps, so that tens of thousands of
//! entries fit: the JSON list of entries gzip-compressed in the inventory ConfigMap's
//! `binaryData` (`objects.gz`), and, when even that is too big for one ConfigMap (the
//! apiserver refuses over 1 MiB), split over pages: ConfigMaps of their own, each named by
//! a digest of its content, which the inventory lists (`data.pages`) with that digest.
//!
//! Pages are immutable: a changed page is a new page with a new name. The inventory
//! ConfigMap is the one place a write commits (it carries the resourceVersion it read), so
//! a crash between writing pages and writing it leaves unreferenced pages (removed by the
//! next write), never an inventory pointing at pages that do not hold what it says. A page
//! that is missing, or whose content does not match the digest the inventory lists, makes
//! the inventory unreadable (the unit fails, nothing is pruned), as any corrupt inventory
//! does. Inventories written as plain JSON (`data.objects`) by earlier versions still read,
//! and are written compressed on their next write.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::inventory::Entry;
use crate::cluster::retry_transport;

/// The plain JSON list of entries, as versions before compression wrote it.
pub(super) const DATA_OBJECTS: &str = "objects";
/// The gzip-compressed JSON list of entries, in `binaryData`.
pub(super) const BINARY_OBJECTS: &str = "objects.gz";
/// The pages holding the entries when they do not fit in the inventory itself.
pub(super) const DATA_PAGES: &str = "pages";
/// The label marking a page of an inventory (value `true`; the team label says whose).
pub const LABEL_INVENTORY_PAGE: &str = "pontoon.dev/inventory-page";
/// The most compressed bytes one ConfigMap carries: the apiserver refuses more than 1 MiB
/// of data, and what is left is room for metadata.
const PAGE_BYTES: usize = 700 * 1024;
/// The most bytes a compressed list may expand to: an inventory edited to be a
/// decompression bomb is an error, not an out-of-memory.
const MAX_EXPANDED: u64 = 256 * 1024 * 1024;

/// One page as the inventory lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PageRef {
    pub name: String,
    /// SHA-256 of the page's compressed bytes, hex.
    pub sha256: String,
}

/// Entries encoded for storage.
#[derive(Debug)]
pub(super) enum Encoded {
    /// Compressed, in the inventory ConfigMap itself.
    Inline(Vec<u8>),
    /// Compressed in pages; the inventory lists them.
    Paged(Vec<(PageRef, Vec<u8>)>),
}

/// Why stored entries could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("cannot read page {name}: {source}")]
    Page { name: String, source: kube::Error },
    #[error("{0}")]
    Corrupt(String),
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn gzip(json: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(json);
    encoder.finish().unwrap_or_default()
}

fn gunzip(bytes: &[u8], what: &str) -> Result<Vec<u8>, String> {
    gunzip_at_most(bytes, what, MAX_EXPANDED)
}

fn gunzip_at_most(bytes: &[u8], what: &str, limit: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{what} is not gzip-compressed: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("{what} expands to more than {limit} bytes"));
    }
    Ok(out)
}

fn parse(json: &[u8], what: &str) -> Result<Vec<Entry>, String> {
    serde_json::from_slice(json)
        .map_err(|e| format!("{what} does not parse as a list of entries: {e}"))
}

/// Encodes `entries` for the inventory named `inventory`: inline when they fit, else in
/// as few pages as keep each under the size one ConfigMap may have.
pub(super) fn encode(entries: &[&Entry], inventory: &str) -> Result<Encoded, serde_json::Error> {
    encode_in(entries, inventory, PAGE_BYTES)
}

fn encode_in(
    entries: &[&Entry],
    inventory: &str,
    page_bytes: usize,
) -> Result<Encoded, serde_json::Error> {
    let whole = gzip(&serde_json::to_vec(entries)?);
    if whole.len() <= page_bytes {
        return Ok(Encoded::Inline(whole));
    }
    // Entries compress alike, so equal shares of them come out about equally big; a
    // share that still comes out too big doubles the count.
    let mut count = whole.len().div_ceil(page_bytes * 4 / 5);
    loop {
        let per_page = entries.len().div_ceil(count).max(1);
        let mut pages = Vec::with_capacity(count);
        for chunk in entries.chunks(per_page) {
            let gz = gzip(&serde_json::to_vec(chunk)?);
            let sha256 = sha256_hex(&gz);
            let name = format!("{inventory}-{}", &sha256[..12]);
            pages.push((PageRef { name, sha256 }, gz));
        }
        if pages.iter().all(|(_, gz)| gz.len() <= page_bytes) || per_page == 1 {
            return Ok(Encoded::Paged(pages));
        }
        count *= 2;
    }
}

/// Where an inventory ConfigMap keeps its entries.
#[derive(Debug, PartialEq)]
pub(super) enum Stored {
    Entries(Vec<Entry>),
    Pages(Vec<PageRef>),
    /// In no form at all.
    Nothing,
}

/// What the inventory ConfigMap itself says: its entries (plain JSON as earlier versions
/// wrote them, or compressed), or the pages holding them.
pub(super) fn stored(cm: &ConfigMap) -> Result<Stored, String> {
    let data = cm.data.as_ref();
    let compressed = cm.binary_data.as_ref().and_then(|b| b.get(BINARY_OBJECTS));
    let pages = data.and_then(|d| d.get(DATA_PAGES));
    match (compressed, pages) {
        (Some(_), Some(_)) => Err(format!(
            // pontoon writes one of them at a time: which one it wrote last is unknown.
            "holds both binaryData.{BINARY_OBJECTS} and data.{DATA_PAGES}"
        )),
        (Some(gz), None) => {
            let what = format!("binaryData.{BINARY_OBJECTS}");
            parse(&gunzip(&gz.0, &what)?, &what).map(Stored::Entries)
        }
        (None, Some(pages)) => serde_json::from_str(pages)
            .map(Stored::Pages)
            .map_err(|e| format!("data.{DATA_PAGES} does not parse as a list of pages: {e}")),
        // Only an inventory written before compression has the plain list alone; beside a
        // compressed one it is a leftover that the write upgrading it could not remove.
        (None, None) => match data.and_then(|d| d.get(DATA_OBJECTS)) {
            Some(json) => {
                parse(json.as_bytes(), &format!("data.{DATA_OBJECTS}")).map(Stored::Entries)
            }
            None => Ok(Stored::Nothing),
        },
    }
}

/// The entries an inventory ConfigMap holds, in whichever form it was written; pages are
/// read from `api`. `Ok(None)`: the ConfigMap holds no list of entries in any form.
pub(super) async fn decode(
    api: &Api<ConfigMap>,
    cm: &ConfigMap,
) -> Result<Option<Vec<Entry>>, ReadError> {
    match stored(cm).map_err(ReadError::Corrupt)? {
        Stored::Entries(entries) => Ok(Some(entries)),
        Stored::Nothing => Ok(None),
        Stored::Pages(pages) => {
            let mut entries = Vec::new();
            for page in pages {
                entries.extend(read_page(api, &page).await?);
            }
            Ok(Some(entries))
        }
    }
}

async fn read_page(api: &Api<ConfigMap>, page: &PageRef) -> Result<Vec<Entry>, ReadError> {
    let read = retry_transport(|| api.get_opt(&page.name)).await;
    let cm = read.map_err(|source| ReadError::Page {
        name: page.name.clone(),
        source,
    })?;
    let what = format!("page {}", page.name);
    let Some(cm) = cm else {
        return Err(ReadError::Corrupt(format!("{what} is missing")));
    };
    let Some(gz) = cm.binary_data.as_ref().and_then(|b| b.get(BINARY_OBJECTS)) else {
        return Err(ReadError::Corrupt(format!(
            "{what} has no binaryData.{BINARY_OBJECTS}"
        )));
    };
    if sha256_hex(&gz.0) != page.sha256 {
        return Err(ReadError::Corrupt(format!(
            "{what} does not hold what the inventory lists (its digest differs)"
        )));
    }
    let json = gunzip(&gz.0, &what).map_err(ReadError::Corrupt)?;
    parse(&json, &what).map_err(ReadError::Corrupt)
}

/// Creates the pages the inventory will list, labelled `labels`. A page of that name that
/// exists already holds the same bytes (its name is their digest), or reading it will say
/// it does not.
pub(super) async fn write_pages(
    api: &Api<ConfigMap>,
    pages: &[(PageRef, Vec<u8>)],
    labels: &BTreeMap<String, String>,
) -> Result<(), kube::Error> {
    for (page, gz) in pages {
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(page.name.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            binary_data: Some(
                [(
                    BINARY_OBJECTS.to_owned(),
                    k8s_openapi::ByteString(gz.clone()),
                )]
                .into(),
            ),
            immutable: Some(true),
            ..Default::default()
        };
        let params = PostParams::default();
        match retry_transport(|| api.create(&params, &cm)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes the pages labelled `selector` that `keep` does not list: pages of an earlier
/// write, or of a write that never committed.
pub(super) async fn remove_pages_but(
    api: &Api<ConfigMap>,
    selector: &str,
    keep: &[PageRef],
) -> Result<(), kube::Error> {
    let params = ListParams::default().labels(selector);
    let pages = retry_transport(|| api.list_metadata(&params)).await?;
    for page in pages.items {
        let Some(name) = page.metadata.name else {
            continue;
        };
        if keep.iter().any(|k| k.name == name) {
            continue;
        }
        let params = DeleteParams::default();
        match retry_transport(|| api.delete(&name, &params)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Applier, Digest};

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: "shop".into(),
                name: format!("config-{i}"),
                applier: Applier::Team,
                uid: Some(format!(
                    "{:08x}-1111-2222-3333-{:012x}",
                    i * 7919,
                    i * 104_729
                )),
                resource_version: Some(format!("{}", 100_000 + i * 3)),
                digest: Some(Digest(
                    sha2::Sha256::digest(i.to_le_bytes())[..16]
                        .try_into()
                        .unwrap_or([0; 16]),
                )),
            })
            .collect()
    }

    fn decode_inline(gz: &[u8]) -> Vec<Entry> {
        parse(&gunzip(gz, "test").expect("gunzip"), "test").expect("parse")
    }

    #[test]
    fn a_few_thousand_entries_fit_inline() {
        let all = entries(3000);
        let refs: Vec<&Entry> = all.iter().collect();
        let Encoded::Inline(gz) = encode(&refs, "inv").expect("encode") else {
            panic!("3000 entries should fit in one ConfigMap");
        };
        assert_eq!(decode_inline(&gz), all);
    }

    #[test]
    fn entries_too_many_for_one_configmap_are_paged_and_read_back_in_order() {
        let all = entries(3000);
        let refs: Vec<&Entry> = all.iter().collect();
        let page_bytes = 16 * 1024;
        let Encoded::Paged(pages) = encode_in(&refs, "inv", page_bytes).expect("encode") else {
            panic!("3000 entries do not fit in 16 KiB");
        };
        assert!(pages.len() >= 2, "{} pages", pages.len());
        let mut back = Vec::new();
        for (page, gz) in &pages {
            assert!(
                gz.len() <= page_bytes,
                "{} is {} bytes",
                page.name,
                gz.len()
            );
            assert_eq!(page.sha256, sha256_hex(gz));
            assert!(
                page.name.starts_with("inv-") && page.name.len() == 16,
                "{}",
                page.name
            );
            back.extend(decode_inline(gz));
        }
        assert_eq!(back, all);
        // The same entries give the same pages: an unchanged page is never rewritten.
        let Encoded::Paged(again) = encode_in(&refs, "inv", page_bytes).expect("encode") else {
            panic!("paged");
        };
        let names = |p: &[(PageRef, Vec<u8>)]| p.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>();
        assert_eq!(names(&again), names(&pages));
    }

    fn configmap(data: &[(&str, &str)], binary: &[(&str, Vec<u8>)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            binary_data: Some(
                binary
                    .iter()
                    .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn every_form_an_inventory_was_written_in_reads() {
        let all = entries(2);
        let json = serde_json::to_string(&all).expect("json");
        let plain = configmap(&[("objects", &json), ("revision", "a")], &[]);
        assert_eq!(stored(&plain), Ok(Stored::Entries(all.clone())));
        let compressed = configmap(
            &[("revision", "a")],
            &[("objects.gz", gzip(json.as_bytes()))],
        );
        assert_eq!(stored(&compressed), Ok(Stored::Entries(all)));
        let page = PageRef {
            name: "inv-0123".into(),
            sha256: "ab".into(),
        };
        let listed = serde_json::to_string(&[&page]).expect("json");
        let paged = configmap(&[("pages", &listed)], &[]);
        assert_eq!(stored(&paged), Ok(Stored::Pages(vec![page])));
        assert_eq!(
            stored(&configmap(&[("revision", "a")], &[])),
            Ok(Stored::Nothing)
        );
        let problem = stored(&configmap(&[("objects", "garbage")], &[])).expect_err("garbage");
        assert!(
            problem.starts_with("data.objects does not parse as a list of entries: ")
                && problem.contains("line 1 column 1"),
            "{problem}"
        );
        let problem =
            stored(&configmap(&[], &[("objects.gz", b"xx".to_vec())])).expect_err("not gzip");
        assert!(
            problem.starts_with("binaryData.objects.gz is not gzip-compressed"),
            "{problem}"
        );
        // A plain list left beside the compressed one is not read.
        let leftover = configmap(&[("objects", "garbage")], &[("objects.gz", gzip(b"[]"))]);
        assert_eq!(stored(&leftover), Ok(Stored::Entries(Vec::new())));
        let both = configmap(&[("pages", "[]")], &[("objects.gz", gzip(b"[]"))]);
        let problem = stored(&both).expect_err("two forms");
        assert_eq!(problem, "holds both binaryData.objects.gz and data.pages");
        let problem = stored(&configmap(&[("pages", "{")], &[])).expect_err("pages");
        assert!(
            problem.starts_with("data.pages does not parse as a list of pages"),
            "{problem}"
        );
    }

    #[test]
    fn what_is_not_a_compressed_list_says_so() {
        assert!(
            gunzip(b"not gzip", "binaryData.objects.gz")
                .expect_err("not gzip")
                .starts_with("binaryData.objects.gz is not gzip-compressed")
        );
        let bomb = gzip(&vec![b' '; 1 << 20]);
        let problem = gunzip_at_most(&bomb, "page x", 1 << 19).expect_err("bomb");
        assert_eq!(problem, "page x expands to more than 524288 bytes");
        let problem = parse(&gzip(b"[1]"), "page x").expect_err("not json");
        assert!(
            problem.starts_with("page x does not parse as a list of entries"),
            "{problem}"
        );
    }
}
