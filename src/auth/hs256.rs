//! HS256, the one signature algorithm this server signs and accepts, as jsonwebtoken's crypto
//! provider. jsonwebtoken's `rust_crypto` feature would build every algorithm it knows, RSA among
//! them (the `rsa` crate, RUSTSEC-2023-0071: a timing side channel in RSA decryption); we build
//! none but HMAC-SHA256, so no token can reach RSA code, and the crate is not even compiled in.

use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use sha2::Sha256;

/// Installed by [`super::JwtKeys::new`], before any token is signed or verified.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: |algorithm, key| {
        let key = (key.family() == AlgorithmFamily::Hmac).then(|| key.as_bytes());
        Ok(Box::new(Hs256::new(algorithm, key)?))
    },
    verifier_factory: |algorithm, key| {
        let key = (key.family() == AlgorithmFamily::Hmac).then(|| key.try_get_as_bytes()).transpose()?;
        Ok(Box::new(Hs256::new(algorithm, key)?))
    },
    key_utils: KeyUtils::new_unimplemented(),
};

struct Hs256(Hmac<Sha256>);

impl Hs256 {
    /// Any other algorithm is refused here too, whatever the caller's validation allowed.
    fn new(algorithm: &Algorithm, secret: Option<&[u8]>) -> Result<Self> {
        if *algorithm != Algorithm::HS256 {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        let secret = secret.ok_or(ErrorKind::InvalidKeyFormat)?;
        Ok(Self(Hmac::new_from_slice(secret).map_err(|_| ErrorKind::InvalidKeyFormat)?))
    }
}

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        // Constant-time comparison.
        mac.verify_slice(signature).map_err(signature::Error::from_source)
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}
