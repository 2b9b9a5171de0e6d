//! `tessera admin hash-password`: the Argon2id hash acl-auth takes as a user's password,
//! computed here without calling a dashboard.

use super::AdminError;

/// The default memory cost of `hash-password`: with [`HASH_ITERATIONS`], about 2 ms natively
/// and 5–8 ms in a plugin under wasmtime on a shared 2-core machine (docs/plugins.md).
pub const HASH_MEMORY_KIB: u32 = 2048;
/// The default time cost of `hash-password`.
pub const HASH_ITERATIONS: u32 = 2;

/// The Argon2id PHC string of `password` with a random 16-byte salt and the given costs
/// (one lane): what acl-auth takes as a user's `password`.
pub fn hash_password(
    password: &[u8],
    memory_kib: u32,
    iterations: u32,
) -> Result<String, AdminError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    if password.is_empty() {
        return Err(AdminError::Usage(
            "the password is empty: give it on standard input".to_string(),
        ));
    }
    let params = argon2::Params::new(memory_kib, iterations, 1, None)
        .map_err(|e| AdminError::Usage(format!("bad Argon2 costs: {e}")))?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source works");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    argon2
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| AdminError::Usage(format!("cannot hash the password: {e}")))
}

/// Reads the password of `hash-password`: all of standard input, less one trailing newline.
pub(crate) fn read_password() -> Result<Vec<u8>, AdminError> {
    use std::io::Read;
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).map_err(|e| {
        AdminError::Usage(format!("cannot read the password from standard input: {e}"))
    })?;
    if input.ends_with(b"\n") {
        input.pop();
        if input.ends_with(b"\r") {
            input.pop();
        }
    }
    Ok(input)
}
