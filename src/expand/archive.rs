//! Chart archives (`.tgz`: a gzip'd tar, as `helm package` writes it) read in memory, for
//! the checks made before helm runs: the templates of a fetched chart, and of subcharts
//! packed as `.tgz` in a chart's `charts/`. Reads only, and within bounds: a tar whose
//! unpacked size passes [`UNPACKED_LIMIT`] is refused rather than read on, and archives
//! nest [`NESTING_LIMIT`] deep at most. Regular files only; links, folders and devices
//! are skipped (helm itself refuses links in a chart).

use std::io::Read as _;

/// Largest unpacked size of one archive, subcharts' included (helm's own limit on a
/// decompressed chart is of the same order).
pub const UNPACKED_LIMIT: u64 = 128 << 20;
/// Subcharts packed in subcharts packed in a chart: deeper is refused.
const NESTING_LIMIT: usize = 4;
const BLOCK: usize = 512;

/// Why an archive could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("is not a gzip'd tar: {0}")]
    Gzip(String),
    #[error("unpacks to more than {UNPACKED_LIMIT} bytes")]
    TooLarge,
    #[error("has a broken tar header at byte {0}")]
    Header(usize),
    #[error("holds chart archives nested more than {NESTING_LIMIT} deep")]
    TooDeep,
}

/// The regular files of a `.tgz`, by path, subcharts packed as `.tgz` under a `charts/`
/// folder unpacked in place: `app/charts/db-1.0.0.tgz` holding `db/templates/x.yaml`
/// gives `app/charts/db/templates/x.yaml`, the name helm gives that template.
pub fn files(tgz: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
    let mut out = Vec::new();
    let mut budget = UNPACKED_LIMIT;
    unpack_into("", tgz, 0, &mut budget, &mut out)?;
    Ok(out)
}

/// Whether `path` is a subchart archive helm would load: `<...>/charts/<name>.tgz`.
pub fn is_subchart_archive(path: &str) -> bool {
    path.ends_with(".tgz")
        && path
            .rsplit('/')
            .nth(1)
            .is_some_and(|parent| parent == "charts")
}

fn unpack_into(
    prefix: &str,
    tgz: &[u8],
    depth: usize,
    budget: &mut u64,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), ArchiveError> {
    if depth > NESTING_LIMIT {
        return Err(ArchiveError::TooDeep);
    }
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(tgz)
        .take(*budget + 1)
        .read_to_end(&mut tar)
        .map_err(|e| ArchiveError::Gzip(e.to_string()))?;
    if tar.len() as u64 > *budget {
        return Err(ArchiveError::TooLarge);
    }
    *budget -= tar.len() as u64;
    for (path, bytes) in entries(&tar)? {
        if is_subchart_archive(&path) {
            // `charts/db-1.0.0.tgz` holds `db/...`: its entries go under `charts/`.
            let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
            unpack_into(&format!("{prefix}{parent}/"), bytes, depth + 1, budget, out)?;
        } else {
            out.push((format!("{prefix}{path}"), bytes.to_vec()));
        }
    }
    Ok(())
}

/// The regular files of an uncompressed tar, read by the `tar` crate (ustar, GNU and
/// PAX long names). A header that does not parse is refused at its offset.
fn entries(tar: &[u8]) -> Result<Vec<(String, &[u8])>, ArchiveError> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    // Where the next header starts: the end of the last entry's data, block-aligned.
    let mut next = 0usize;
    for entry in archive.entries().map_err(|_| ArchiveError::Header(0))? {
        let entry = entry.map_err(|_| ArchiveError::Header(next))?;
        let at = usize::try_from(entry.raw_header_position()).unwrap_or(usize::MAX);
        let end = usize::try_from(entry.raw_file_position())
            .ok()
            .zip(usize::try_from(entry.size()).ok())
            .and_then(|(start, size)| Some((start, start.checked_add(size)?)))
            .filter(|(_, end)| *end <= tar.len())
            .ok_or(ArchiveError::Header(at))?;
        next = end.1.div_ceil(BLOCK) * BLOCK;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path_bytes();
        let name = String::from_utf8_lossy(&path)
            .trim_start_matches("./")
            .to_owned();
        out.push((name, &tar[end.0..end.1]));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar of `files` as `tar::Builder` writes it (a long name gets a GNU long-name
    /// entry), gzip'd.
    pub(crate) fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, name, *bytes)
                .expect("tar entry");
        }
        let tar = builder.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip");
        gz.finish().expect("gzip")
    }

    #[test]
    fn files_and_nested_subchart_archives_are_read_by_helms_names() {
        let sub = tgz(&[
            ("db/Chart.yaml", b"name: db\n"),
            ("db/templates/s.yaml", b"kind: Secret\n"),
        ]);
        let long = format!("app/templates/{}.yaml", "x".repeat(120));
        let chart = tgz(&[
            ("app/Chart.yaml", b"name: app\n"),
            ("app/charts/db-1.0.0.tgz", &sub),
            (&long, b"kind: ConfigMap\n"),
        ]);
        let got = files(&chart).expect("read");
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "app/Chart.yaml",
                "app/charts/db/Chart.yaml",
                "app/charts/db/templates/s.yaml",
                long.as_str()
            ]
        );
        assert_eq!(got[2].1, b"kind: Secret\n");
    }

    #[test]
    fn what_is_no_chart_archive_is_refused_not_read_on() {
        assert!(matches!(files(b"not gzip"), Err(ArchiveError::Gzip(_))));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut header = [0u8; BLOCK];
        header[124..135].copy_from_slice(b"77777777777");
        std::io::Write::write_all(&mut gz, &header).expect("gzip");
        let broken = gz.finish().expect("gzip");
        assert_eq!(files(&broken), Err(ArchiveError::Header(0)));
        assert!(is_subchart_archive("app/charts/db-1.0.0.tgz"));
        assert!(!is_subchart_archive("app/files/db-1.0.0.tgz"));
    }
}
