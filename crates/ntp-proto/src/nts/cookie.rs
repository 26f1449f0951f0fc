//! The server's cookies (RFC 8915 §6): the session's keys sealed under a
//! master key that the server rotates, so the server keeps no per-client
//! state. Format: master key ID (4 bytes), nonce (16), then the sealed
//! (AEAD ID, 2 bytes of zero, C2S key, S2C key) with the key ID as
//! associated data: 104 bytes in all.

use super::aead::{Key, KEY_LEN, TAG_LEN};
use super::{SessionKeys, AEAD_AES_SIV_CMAC_256};

/// Nonce length inside a cookie.
pub const COOKIE_NONCE_LEN: usize = 16;
const PLAINTEXT_LEN: usize = 4 + 2 * KEY_LEN;
/// Length of every cookie this server makes.
pub const COOKIE_LEN: usize = 4 + COOKIE_NONCE_LEN + PLAINTEXT_LEN + TAG_LEN;

/// A master key and its ID.
#[derive(Debug, Clone)]
pub struct MasterKey {
    /// Named in each cookie, to find the key again.
    pub id: u32,
    /// The key.
    pub key: Key,
}

/// The current master key and the one before it: cookies made under an
/// older key no longer open ("expired"), and the client must redo NTS-KE.
#[derive(Debug, Clone)]
pub struct MasterKeys {
    current: MasterKey,
    previous: Option<MasterKey>,
}

impl MasterKeys {
    /// Starts with one key.
    #[must_use]
    pub fn new(first: MasterKey) -> Self {
        Self { current: first, previous: None }
    }

    /// Makes `next` the current key; the current one still opens cookies
    /// until the next rotation.
    pub fn rotate(&mut self, next: MasterKey) {
        self.previous = Some(std::mem::replace(&mut self.current, next));
    }

    /// The ID of the current key.
    #[must_use]
    pub fn current_id(&self) -> u32 {
        self.current.id
    }

    /// `count` fresh cookies of `keys`, each under its own nonce from
    /// `random` (the shell passes a CSPRNG).
    #[must_use]
    pub fn make_cookies(&self, keys: &SessionKeys, count: usize, mut random: impl FnMut(&mut [u8])) -> Vec<Vec<u8>> {
        (0..count)
            .map(|_| {
                let mut nonce = [0; COOKIE_NONCE_LEN];
                random(&mut nonce);
                self.make_cookie(keys, &nonce)
            })
            .collect()
    }

    /// Seals `keys` into a cookie under the current key.
    #[must_use]
    pub fn make_cookie(&self, keys: &SessionKeys, nonce: &[u8; COOKIE_NONCE_LEN]) -> Vec<u8> {
        let mut plaintext = Vec::with_capacity(PLAINTEXT_LEN);
        plaintext.extend_from_slice(&AEAD_AES_SIV_CMAC_256.to_be_bytes());
        plaintext.extend_from_slice(&[0, 0]);
        plaintext.extend_from_slice(&keys.c2s.0);
        plaintext.extend_from_slice(&keys.s2c.0);
        let id = self.current.id.to_be_bytes();
        let mut cookie = Vec::with_capacity(COOKIE_LEN);
        cookie.extend_from_slice(&id);
        cookie.extend_from_slice(nonce);
        cookie.extend_from_slice(&self.current.key.seal(nonce, &id, &plaintext));
        cookie
    }

    /// Opens a cookie: `None` if it is not one of ours, was tampered with,
    /// or was made under a key no longer kept.
    #[must_use]
    pub fn open_cookie(&self, cookie: &[u8]) -> Option<SessionKeys> {
        if cookie.len() != COOKIE_LEN {
            return None;
        }
        let (id, rest) = cookie.split_at(4);
        let (nonce, sealed) = rest.split_at(COOKIE_NONCE_LEN);
        let id_value = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        let master = [Some(&self.current), self.previous.as_ref()].into_iter().flatten().find(|k| k.id == id_value)?;
        let plaintext = master.key.open(nonce, id, sealed)?;
        if plaintext.len() != PLAINTEXT_LEN || plaintext[..4] != [0, 15, 0, 0] {
            return None;
        }
        let key_at = |from: usize| {
            let mut key = [0; KEY_LEN];
            key.copy_from_slice(&plaintext[from..from + KEY_LEN]);
            Key(key)
        };
        Some(SessionKeys { c2s: key_at(4), s2c: key_at(4 + KEY_LEN) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SessionKeys {
        SessionKeys { c2s: Key([1; KEY_LEN]), s2c: Key([2; KEY_LEN]) }
    }

    #[test]
    fn a_cookie_opens_until_its_key_is_rotated_out_twice() {
        let mut masters = MasterKeys::new(MasterKey { id: 1, key: Key([9; KEY_LEN]) });
        let cookie = masters.make_cookie(&keys(), &[5; COOKIE_NONCE_LEN]);
        assert_eq!(cookie.len(), COOKIE_LEN);
        assert_eq!(COOKIE_LEN % 4, 0);
        assert_eq!(masters.open_cookie(&cookie), Some(keys()));
        masters.rotate(MasterKey { id: 2, key: Key([10; KEY_LEN]) });
        assert_eq!(masters.open_cookie(&cookie), Some(keys()), "the previous key still opens");
        masters.rotate(MasterKey { id: 3, key: Key([11; KEY_LEN]) });
        assert_eq!(masters.open_cookie(&cookie), None, "expired");
    }

    #[test]
    fn tampered_or_foreign_cookies_do_not_open() {
        let masters = MasterKeys::new(MasterKey { id: 1, key: Key([9; KEY_LEN]) });
        let cookie = masters.make_cookie(&keys(), &[5; COOKIE_NONCE_LEN]);
        for i in 0..cookie.len() {
            let mut bad = cookie.clone();
            bad[i] ^= 1;
            assert_eq!(masters.open_cookie(&bad), None, "byte {i}");
        }
        assert_eq!(masters.open_cookie(&cookie[..50]), None);
        let other = MasterKeys::new(MasterKey { id: 1, key: Key([8; KEY_LEN]) });
        assert_eq!(other.open_cookie(&cookie), None);
    }
}
