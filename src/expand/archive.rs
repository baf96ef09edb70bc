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

/// The regular files of an uncompressed tar (ustar, with PAX and GNU long names).
fn entries(tar: &[u8]) -> Result<Vec<(String, &[u8])>, ArchiveError> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut long_name: Option<String> = None;
    while at + BLOCK <= tar.len() {
        let header = &tar[at..at + BLOCK];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let size = octal(&header[124..136]).ok_or(ArchiveError::Header(at))?;
        let start = at + BLOCK;
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| start.checked_add(s))
            .filter(|e| *e <= tar.len())
            .ok_or(ArchiveError::Header(at))?;
        let data = &tar[start..end];
        match header[156] {
            b'x' => long_name = pax_path(data).or(long_name),
            b'L' => long_name = Some(text(data)),
            b'0' | 0 => {
                let name = long_name.take().unwrap_or_else(|| ustar_name(header));
                out.push((name.trim_start_matches("./").to_owned(), data));
            }
            _ => long_name = None,
        }
        at = start + size.div_ceil(BLOCK as u64) as usize * BLOCK;
    }
    Ok(out)
}

/// A header's name: `prefix/name` for ustar, `name` otherwise.
fn ustar_name(header: &[u8]) -> String {
    let name = text(&header[0..100]);
    let prefix = if &header[257..262] == b"ustar" && header[262] == 0 {
        text(&header[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// The `path` record of a PAX extended header (`<len> path=<value>\n` records).
fn pax_path(data: &[u8]) -> Option<String> {
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        let record = rest.get(space + 1..len)?;
        if let Some(value) = record.strip_prefix(b"path=") {
            return Some(text(value.strip_suffix(b"\n").unwrap_or(value)));
        }
        rest = &rest[len..];
    }
    None
}

/// A NUL-terminated field as text.
fn text(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// A numeric field: octal ASCII, or big-endian binary when its first byte's high bit is set.
fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return field[1..]
            .iter()
            .try_fold(u64::from(field[0] & 0x7f), |n, b| {
                n.checked_mul(256).map(|n| n + u64::from(*b))
            });
    }
    let digits = text(field);
    let digits = digits.trim_matches(|c: char| c == ' ' || c == '\0');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar of `files`, ustar headers (a long name goes in a PAX header), gzip'd.
    pub(crate) fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = Vec::new();
        for (name, bytes) in files {
            if name.len() > 99 {
                let record = format!("path={name}\n");
                // The length counts its own digits.
                let mut len = record.len() + 2;
                while record.len() + 1 + len.to_string().len() != len {
                    len = record.len() + 1 + len.to_string().len();
                }
                let pax = format!("{len} {record}");
                push_entry(&mut tar, "PaxHeader", b'x', pax.as_bytes());
                push_entry(&mut tar, "long", b'0', bytes);
            } else {
                push_entry(&mut tar, name, b'0', bytes);
            }
        }
        tar.extend([0u8; BLOCK * 2]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip");
        gz.finish().expect("gzip")
    }

    fn push_entry(tar: &mut Vec<u8>, name: &str, kind: u8, bytes: &[u8]) {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{:011o}", bytes.len()).as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar.extend(h);
        tar.extend(bytes);
        tar.extend(vec![0u8; bytes.len().div_ceil(BLOCK) * BLOCK - bytes.len()]);
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
