//! The pair's shared secret (`ha.key_file`): 32 to 64 bytes, in a file only
//! its owner can read. Anyone who can read it can inject stations into the
//! backup, so a file readable by group or others is refused, not warned
//! about.
//!
//! Both nodes derive the same key id from the same secret (the first two
//! bytes of SHA-256 over a label and the secret), so a message sealed under
//! another secret is told apart from a forged one without configuring ids:
//! it is counted as `unknown_key`, the sign of a half-done key rotation.

use std::{os::unix::fs::MetadataExt as _, path::Path};

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// Shortest secret accepted.
pub const MIN_LEN: usize = 32;
/// Longest secret accepted (one SHA-256 block: a longer HMAC key is
/// hashed first, which adds nothing).
pub const MAX_LEN: usize = 64;

/// Why a key file was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    /// Could not be read.
    #[error("{0}: cannot read the HA key: {1}")]
    Read(String, String),
    /// Readable by group or others.
    #[error("{0}: the HA key is readable by others (mode {1:o}): chmod 600 it")]
    Mode(String, u32),
    /// Too short or too long.
    #[error(
        "{0}: the HA key is {1} bytes; it must be {MIN_LEN}-{MAX_LEN} (head -c 32 /dev/urandom > FILE)"
    )]
    Length(String, usize),
}

/// HMAC-SHA256.
pub(super) type HmacSha256 = Hmac<Sha256>;

/// The shared secret, its id, and the MAC keyed with it.
#[derive(Clone)]
pub struct Key {
    id: u16,
    secret: Vec<u8>,
    /// Keyed once; every message clones it (cheaper than keying again).
    mac: HmacSha256,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.secret == other.secret
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in a debug log.
        write!(f, "Key {{ id: {:#06x} }}", self.id)
    }
}

impl Key {
    /// A key from its secret bytes.
    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        if !(MIN_LEN..=MAX_LEN).contains(&secret.len()) {
            return Err(KeyError::Length("key".into(), secret.len()));
        }
        let digest = Sha256::new()
            .chain_update(b"ferry ha key id\0")
            .chain_update(secret)
            .finalize();
        let mac = HmacSha256::new_from_slice(secret)
            .map_err(|_| KeyError::Length("key".into(), secret.len()))?;
        Ok(Self {
            id: u16::from_be_bytes([digest[0], digest[1]]),
            secret: secret.to_vec(),
            mac,
        })
    }

    /// Reads the key file `path`: mode 0600 or stricter, 32-64 bytes (the
    /// file's bytes as they are; one trailing newline, as an editor
    /// leaves it, is not part of the secret).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let name = path.display().to_string();
        let read = |e: std::io::Error| KeyError::Read(name.clone(), e.to_string());
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode(name, mode));
        }
        if meta.len() > (MAX_LEN + 1) as u64 {
            return Err(KeyError::Length(name, meta.len() as usize));
        }
        let mut bytes = std::fs::read(path).map_err(read)?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        Self::new(&bytes).map_err(|e| match e {
            KeyError::Length(_, n) => KeyError::Length(name, n),
            other => other,
        })
    }

    /// The key id both nodes derive from the secret.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// A MAC keyed with the secret, ready for one message.
    pub(super) fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_key_file_is_private_and_32_to_64_bytes() {
        let dir = std::env::temp_dir().join(format!("ferry-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("peer.key");
        let write = |bytes: &[u8], mode: u32| {
            std::fs::write(&f, bytes).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&[7u8; 32], 0o600);
        let k = Key::load(&f).unwrap();
        assert_eq!(k, Key::new(&[7u8; 32]).unwrap());
        let mut with_newline = vec![7u8; 32];
        with_newline.push(b'\n');
        write(&with_newline, 0o400);
        assert_eq!(
            Key::load(&f).unwrap().id(),
            k.id(),
            "one newline is not the secret"
        );
        assert_ne!(Key::new(&[8u8; 32]).unwrap().id(), k.id());
        write(&[7u8; 32], 0o640);
        assert_eq!(
            Key::load(&f),
            Err(KeyError::Mode(f.display().to_string(), 0o640))
        );
        write(&[7u8; 31], 0o600);
        assert!(matches!(Key::load(&f), Err(KeyError::Length(_, 31))));
        write(&[7u8; 65], 0o600);
        assert!(matches!(Key::load(&f), Err(KeyError::Length(_, 65))));
        assert_eq!(format!("{k:?}"), format!("Key {{ id: {:#06x} }}", k.id()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
