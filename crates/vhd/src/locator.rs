//! Parent locators: how a differencing disk names its parent, and how Strata finds it.
//!
//! Strata writes three entries, as Windows peers expect plus one for Unix peers:
//! `W2ru` (relative path, `.\name.vhd`, UTF-16 little-endian), `W2ku` (absolute path, UTF-16
//! little-endian) and `MacX` (a `file://` URL, UTF-8). When opening, the relative entry is tried
//! first so that a folder of chained disks can be moved, then `MacX`, then `W2ku`, then the parent
//! name of the header, first as written and then by its base name in the child's folder (what
//! libvhdi does).

use std::path::{Component, Path, PathBuf};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::header::{PLAT_MACX, PLAT_W2KU, PLAT_W2RU, PLAT_WI2K, PLAT_WI2R};

/// Characters escaped in `file://` URLs.
const URL_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?');

/// The locator payloads Strata writes for a parent, as (platform code, bytes).
pub fn encode(child: &Path, parent_abs: &Path) -> Vec<(u32, Vec<u8>)> {
    let rel = relative_path(child.parent().unwrap_or(Path::new(".")), parent_abs);
    let mut rel_win = String::from(".");
    for comp in rel.components() {
        rel_win.push('\\');
        rel_win.push_str(&comp.as_os_str().to_string_lossy());
    }
    let rel_win = rel_win.replacen(".\\..", "..", 1);
    let abs = parent_abs.to_string_lossy().into_owned();
    let url = format!("file://{}", utf8_percent_encode(&abs, URL_ESCAPE));
    vec![
        (PLAT_W2RU, utf16le(&rel_win)),
        (PLAT_W2KU, utf16le(&abs)),
        (PLAT_MACX, url.into_bytes()),
    ]
}

/// Decodes a locator payload into the path text it holds, or `None` for unknown codes.
pub fn decode(code: u32, data: &[u8]) -> Option<String> {
    match code {
        PLAT_W2KU | PLAT_W2RU => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        PLAT_WI2K | PLAT_WI2R => Some(
            String::from_utf8_lossy(data)
                .trim_end_matches('\0')
                .to_string(),
        ),
        PLAT_MACX => {
            let text = String::from_utf8_lossy(data)
                .trim_end_matches('\0')
                .to_string();
            let path = text.strip_prefix("file://").unwrap_or(&text).to_string();
            Some(percent_decode_str(&path).decode_utf8_lossy().into_owned())
        }
        _ => None,
    }
}

/// Preference order of a platform code (lower is tried first).
pub fn preference(code: u32) -> u8 {
    match code {
        PLAT_W2RU | PLAT_WI2R => 0,
        PLAT_MACX => 1,
        PLAT_W2KU | PLAT_WI2K => 2,
        _ => 3,
    }
}

/// Turns a path text read from a locator or header into a path on this host, relative texts being
/// taken from the child's folder. Windows drive paths (`C:\…`) cannot exist here: `None`.
pub fn host_path(child_dir: &Path, text: &str) -> Option<PathBuf> {
    if text.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' || text.starts_with("\\\\") {
        return None;
    }
    let unix = text.replace('\\', "/");
    let p = Path::new(&unix);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        child_dir.join(p)
    };
    // Drop "." components ("./x.vhd" → "x.vhd"); ".." is kept (symbolic links make it meaningful).
    Some(
        joined
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect(),
    )
}

/// The base name of a Windows or Unix path text.
pub fn base_name(text: &str) -> &str {
    text.rsplit(['\\', '/']).next().unwrap_or(text)
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A path from `from_dir` to `to`, both absolute.
pub fn relative_path(from_dir: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from_dir.components().collect();
    let target: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &target[common..] {
        rel.push(c.as_os_str());
    }
    rel
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_locators() {
        let enc = encode(Path::new("/vm/a/child.vhd"), Path::new("/vm/base disk.vhd"));
        let texts: Vec<String> = enc.iter().map(|(c, d)| decode(*c, d).unwrap()).collect();
        assert_eq!(
            texts,
            vec![
                "..\\base disk.vhd",
                "/vm/base disk.vhd",
                "/vm/base disk.vhd"
            ]
        );
        assert!(String::from_utf8(enc[2].1.clone())
            .unwrap()
            .starts_with("file:///vm/base%20disk.vhd"));
        let same = encode(Path::new("/vm/child.vhd"), Path::new("/vm/p.vhd"));
        assert_eq!(decode(same[0].0, &same[0].1).unwrap(), ".\\p.vhd");
    }

    #[test]
    fn host_paths() {
        let dir = Path::new("/d");
        assert_eq!(host_path(dir, ".\\p.vhd"), Some(PathBuf::from("/d/p.vhd")));
        assert_eq!(
            host_path(Path::new("."), ".\\p.vhd"),
            Some(PathBuf::from("p.vhd"))
        );
        assert_eq!(host_path(dir, "C:\\x\\p.vhd"), None);
        assert_eq!(base_name("C:\\x\\p.vhd"), "p.vhd");
        assert_eq!(base_name("/x/p.vhd"), "p.vhd");
    }
}
