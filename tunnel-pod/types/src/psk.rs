//! The one rule that turns stored bytes into a PSK, shared by the operator (a Secret's value) and
//! the endpoint (the mounted file), so the two can never disagree about which keys are usable.
//!
//! The rule: at most [`MAX_PSK_BYTES`] bytes as stored; one trailing `\n` or `\r\n` is removed
//! (it comes from `kubectl create secret --from-file` of an edited file, or `echo`); what is left
//! must be at least [`MIN_PSK_LEN`] bytes. Nothing else is changed: an adopted Secret may hold
//! binary, and leading or inner whitespace is part of the key.
//!
//! Errors carry lengths and paths, never key bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::config::{MIN_PSK_LEN, Psk};

/// The longest stored PSK value accepted (before the trailing newline is removed). A file is read
/// no further than this, so a wrong path (a log, a device) cannot exhaust memory.
pub const MAX_PSK_BYTES: usize = 4096;

/// Why stored bytes are not a usable PSK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    #[error("the PSK is too weak: {len} bytes, at least {MIN_PSK_LEN} are required")]
    TooShort { len: usize },
    #[error("the PSK is too long: {len} bytes, at most {MAX_PSK_BYTES} are allowed")]
    TooLong { len: usize },
}

/// Why the PSK file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PskFileError {
    #[error("reading the PSK file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the PSK file {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("the PSK file {} is larger than {MAX_PSK_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("the PSK file {}: {source}", path.display())]
    Invalid { path: PathBuf, source: PskError },
}

/// Apply the PSK rule to stored bytes (a Secret's value, a file's content).
pub fn psk_from_bytes(bytes: &[u8]) -> Result<Psk, PskError> {
    if bytes.len() > MAX_PSK_BYTES {
        return Err(PskError::TooLong { len: bytes.len() });
    }
    let trimmed = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    if trimmed.len() < MIN_PSK_LEN {
        return Err(PskError::TooShort { len: trimmed.len() });
    }
    Ok(Psk::new(trimmed.to_vec()))
}

/// Read the PSK from `path` now (following symlinks, as the kubelet's Secret volume needs) and
/// apply [`psk_from_bytes`]. Called for each new IKE SA rather than once at start, so a rotated
/// Secret applies as soon as the kubelet has refreshed the file; nothing is cached here.
pub fn read_psk_file(path: &Path) -> Result<Psk, PskFileError> {
    let io = |source| PskFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Checked before opening too: opening a FIFO with no writer would block the reader.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(PskFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(PskFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    // One allocation of the final size, filled in place: a growing Vec would leave copies of the
    // key in freed memory, and `read_to_end` may probe through a stack buffer. One byte more than
    // allowed tells "exactly the limit" from "too large" without reading further.
    let mut buf = Zeroizing::new(vec![0u8; MAX_PSK_BYTES + 1]);
    let mut filled = 0usize;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    if filled > MAX_PSK_BYTES {
        return Err(PskFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let content = buf.get(..filled).unwrap_or_default();
    psk_from_bytes(content).map_err(|source| PskFileError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "magictunnel-psk-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }
        fn write(&self, name: &str, content: &[u8]) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, content).expect("write");
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const KEY: &[u8] = b"0123456789abcdef";

    #[test]
    fn the_rule_strips_one_trailing_newline_and_nothing_else() {
        let ok = |b: &[u8]| psk_from_bytes(b).expect("valid").as_bytes().to_vec();
        assert_eq!(ok(KEY), KEY);
        assert_eq!(ok(b"0123456789abcdef\n"), KEY);
        assert_eq!(ok(b"0123456789abcdef\r\n"), KEY);
        // Only one newline goes; the second is part of the key.
        assert_eq!(ok(b"0123456789abcdef\n\n"), b"0123456789abcdef\n");
        // Leading and inner whitespace, a lone CR and binary stay.
        assert_eq!(ok(b" 0123456789abcdef"), b" 0123456789abcdef");
        assert_eq!(ok(b"0123456789abcdef\r"), b"0123456789abcdef\r");
        assert_eq!(
            ok(&[0u8, 255, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]).len(),
            16
        );
    }

    #[test]
    fn the_rule_counts_length_after_the_newline_and_bounds_the_stored_value() {
        // 15 key bytes and a newline: 16 stored, 15 used.
        assert_eq!(
            psk_from_bytes(b"0123456789abcde\n"),
            Err(PskError::TooShort { len: 15 })
        );
        assert_eq!(psk_from_bytes(b""), Err(PskError::TooShort { len: 0 }));
        assert_eq!(psk_from_bytes(b"\n"), Err(PskError::TooShort { len: 0 }));
        let at_limit = vec![b'k'; MAX_PSK_BYTES];
        assert_eq!(
            psk_from_bytes(&at_limit).expect("at the limit").len(),
            MAX_PSK_BYTES
        );
        let mut over = at_limit.clone();
        over.push(b'\n');
        assert_eq!(
            psk_from_bytes(&over),
            Err(PskError::TooLong {
                len: MAX_PSK_BYTES + 1
            })
        );
    }

    #[test]
    fn errors_never_hold_the_key() {
        let weak = b"hunter2-secret";
        let msg = psk_from_bytes(weak).expect_err("weak").to_string();
        assert!(
            msg.contains("14 bytes") && !msg.contains("hunter2"),
            "{msg}"
        );
        let dir = TempDir::new();
        let path = dir.write("psk", weak);
        let err = read_psk_file(&path).expect_err("weak");
        let text = format!("{err} {err:?}");
        assert!(text.contains("psk") && !text.contains("hunter2"), "{text}");
    }

    #[test]
    fn reads_a_real_file_by_the_same_rule() {
        let dir = TempDir::new();
        let good = dir.write("good", b"0123456789abcdef\n");
        assert_eq!(read_psk_file(&good).expect("good").as_bytes(), KEY);
        let crlf = dir.write("crlf", b"0123456789abcdef\r\n");
        assert_eq!(read_psk_file(&crlf).expect("crlf").as_bytes(), KEY);
        let short = dir.write("short", b"short\n");
        assert!(matches!(
            read_psk_file(&short),
            Err(PskFileError::Invalid {
                source: PskError::TooShort { len: 5 },
                ..
            })
        ));
        let exact = dir.write("exact", &vec![b'k'; MAX_PSK_BYTES]);
        assert_eq!(
            read_psk_file(&exact).expect("at the limit").len(),
            MAX_PSK_BYTES
        );
        let large = dir.write("large", &vec![b'k'; MAX_PSK_BYTES + 1]);
        assert!(matches!(
            read_psk_file(&large),
            Err(PskFileError::TooLarge { .. })
        ));
        let huge = dir.write("huge", &vec![b'k'; 1 << 20]);
        assert!(matches!(
            read_psk_file(&huge),
            Err(PskFileError::TooLarge { .. })
        ));
        match read_psk_file(&dir.0.join("missing")) {
            Err(PskFileError::Io { source, path }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
                assert!(path.ends_with("missing"));
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert!(matches!(
            read_psk_file(&dir.0),
            Err(PskFileError::NotAFile { .. }) | Err(PskFileError::Io { .. })
        ));
    }

    #[test]
    fn devices_are_refused() {
        // A wrong path to a device is refused before any read (the bounded read would end a
        // never-ending one too, see `huge` above).
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            assert!(matches!(
                read_psk_file(zero),
                Err(PskFileError::NotAFile { .. })
            ));
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = TempDir::new();
        let fifo = dir.0.join("psk");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            return; // no mkfifo here: nothing to check
        }
        // Opening a FIFO that nobody writes would block forever; the check must come first.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(matches!(
                read_psk_file(&fifo),
                Err(PskFileError::NotAFile { .. })
            ));
        });
        let refused = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(
            refused,
            Ok(true),
            "a FIFO at pskFile must be refused at once"
        );
    }

    #[test]
    fn a_file_rewritten_in_place_is_read_anew() {
        let dir = TempDir::new();
        let path = dir.write("psk", b"first-key-0123456789\n");
        assert_eq!(
            read_psk_file(&path).expect("first").as_bytes(),
            b"first-key-0123456789"
        );
        std::fs::write(&path, b"second-key-0123456789\n").expect("rewrite");
        assert_eq!(
            read_psk_file(&path).expect("second").as_bytes(),
            b"second-key-0123456789"
        );
    }

    /// The kubelet's AtomicWriter layout: `psk -> ..data/psk`, `..data -> ..<timestamp>/`; an
    /// update writes a new timestamped directory and renames a new `..data` link over the old.
    #[cfg(unix)]
    #[test]
    fn a_kubelet_style_symlink_swap_is_followed() {
        use std::os::unix::fs::symlink;
        let dir = TempDir::new();
        let v1 = dir.0.join("..2026_12_01_07_00_00.000000001");
        std::fs::create_dir(&v1).expect("v1");
        std::fs::write(v1.join("psk"), b"first-key-0123456789").expect("v1 psk");
        symlink("..2026_12_01_07_00_00.000000001", dir.0.join("..data")).expect("..data");
        symlink("..data/psk", dir.0.join("psk")).expect("psk link");
        let path = dir.0.join("psk");
        assert_eq!(
            read_psk_file(&path).expect("v1").as_bytes(),
            b"first-key-0123456789"
        );

        let v2 = dir.0.join("..2026_12_01_07_01_00.000000002");
        std::fs::create_dir(&v2).expect("v2");
        std::fs::write(v2.join("psk"), b"second-key-0123456789\n").expect("v2 psk");
        symlink("..2026_12_01_07_01_00.000000002", dir.0.join("..data_tmp")).expect("tmp link");
        std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).expect("swap");
        std::fs::remove_dir_all(&v1).expect("old version removed");
        assert_eq!(
            read_psk_file(&path).expect("v2").as_bytes(),
            b"second-key-0123456789"
        );

        // A second rotation, to show it is not a one-off.
        let v3 = dir.0.join("..2026_12_01_07_02_00.000000003");
        std::fs::create_dir(&v3).expect("v3");
        std::fs::write(v3.join("psk"), b"third-key-0123456789").expect("v3 psk");
        symlink("..2026_12_01_07_02_00.000000003", dir.0.join("..data_tmp")).expect("tmp link");
        std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).expect("swap");
        assert_eq!(
            read_psk_file(&path).expect("v3").as_bytes(),
            b"third-key-0123456789"
        );
    }
}
