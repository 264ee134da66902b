use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A new refresh token: the secret the client gets, once, and the hash the database keeps.
pub struct RefreshSecret {
    pub token: String,
    pub hash: String,
}

impl RefreshSecret {
    /// 256 random bits: unguessable, so a fast hash is enough to store it (unlike passwords).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let hash = hash_refresh_token(&token);
        Self { token, hash }
    }
}

pub fn hash_refresh_token(token: &str) -> String {
    crate::domain::sha256_hex(&[token.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_stored_only_as_their_hash() {
        let (a, b) = (RefreshSecret::generate(), RefreshSecret::generate());
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), 43, "32 bytes, base64url without padding");
        assert_eq!(a.hash, hash_refresh_token(&a.token));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.token));
    }
}
