//! The right to be forgotten in an immutable log: crypto-shredding.
//!
//! A log's personal fields are stored encrypted, each person's with their own key (AES-256-GCM). The keys live in a
//! key store beside the log, a JSON Lines file read as a snapshot (current state, not replayed):
//!
//! ```text
//! {"subject":7,"key":"<base64 of 32 bytes>","forgotten":false}
//! {"subject":7,"key":null,"forgotten":true}
//! ```
//!
//! Views decrypt with `kappa_decrypt(ciphertext, key)`, which yields NULL when the key is missing. Forgetting a person
//! ([`forget`]) appends one deletion to the key store and writes nothing else: the event log stays as it was, a replay
//! from offset 0 still works, and every view shows the person's fields as gone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_string_array;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::pipeline::Pipeline;

/// The SQL function's name.
pub const DECRYPT_FUNCTION: &str = "kappa_decrypt";

/// Bytes of an AES-GCM nonce, written before the ciphertext.
const NONCE_LEN: usize = 12;

/// Registers Kappa's own SQL functions in `ctx`.
pub fn register_functions(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(Decrypt::new()));
}

/// Encrypts `plaintext` with a 32-byte `key` and a 12-byte `nonce`: base64 of the nonce followed by the ciphertext and
/// its tag, the form `kappa_decrypt` reads.
#[must_use]
pub fn encrypt(key: &[u8; 32], nonce: &[u8; NONCE_LEN], plaintext: &str) -> String {
    let cipher = Aes256Gcm::new(key.into());
    let sealed = cipher
        .encrypt(Nonce::from_slice(nonce), plaintext.as_bytes())
        .unwrap_or_default();
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    STANDARD.encode(bytes)
}

/// Decrypts what [`encrypt`] wrote with a base64 key, or `None` when the key is not a 32-byte key or does not open it.
#[must_use]
pub fn decrypt(ciphertext: &str, key: &str) -> Option<String> {
    let key = STANDARD.decode(key).ok()?;
    let key: [u8; 32] = key.try_into().ok()?;
    let bytes = STANDARD.decode(ciphertext).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new((&key).into());
    let plain = cipher.decrypt(Nonce::from_slice(nonce), sealed).ok()?;
    String::from_utf8(plain).ok()
}

/// `kappa_decrypt(ciphertext, key)`: the plaintext, or NULL when either is NULL or the key does not open it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Decrypt {
    signature: Signature,
}

impl Decrypt {
    fn new() -> Decrypt {
        Decrypt {
            signature: Signature::uniform(2, vec![DataType::Utf8], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Decrypt {
    fn name(&self) -> &str {
        DECRYPT_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let as_utf8 = |array: &ArrayRef| datafusion::arrow::compute::cast(array, &DataType::Utf8);
        let (ciphertexts, keys) = (as_utf8(&arrays[0])?, as_utf8(&arrays[1])?);
        let (ciphertexts, keys) = (as_string_array(&ciphertexts)?, as_string_array(&keys)?);
        let plain: StringArray = (0..ciphertexts.len())
            .map(|i| {
                if ciphertexts.is_null(i) || keys.is_null(i) {
                    None
                } else {
                    decrypt(ciphertexts.value(i), keys.value(i))
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(plain)))
    }
}

/// What [`forget`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forgotten {
    /// The deletion was appended to the key store at this path.
    Now(PathBuf),
    /// The key store already said the subject is forgotten; nothing was written.
    Already(PathBuf),
}

/// Forgets `subject` by appending one key deletion to the key store, the source called `key_store`. Writes nothing
/// else. An error when the pipeline has no such source or the key store holds no key for the subject.
pub fn forget(pipeline: &Pipeline, key_store: &str, subject: &str) -> Result<Forgotten> {
    let Some(source) = pipeline.sources.iter().find(|s| s.name == key_store) else {
        return Err(Error::Decode {
            path: pipeline.file.clone().unwrap_or_default(),
            reason: format!(
                "no source is called `{key_store}` to hold the keys (name it with --key-store; the sources are: {})",
                pipeline
                    .sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    let path = source.path.clone();
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let state = subject_state(&path, &text, subject)?;
    match state {
        None => Err(Error::Decode {
            path,
            reason: format!("the key store holds no key for subject {subject}"),
        }),
        Some((_, true)) => Ok(Forgotten::Already(path)),
        Some((written, false)) => {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let line = format!(
                "{}{{\"subject\":{written},\"key\":null,\"forgotten\":true}}\n",
                if text.is_empty() || text.ends_with('\n') {
                    ""
                } else {
                    "\n"
                }
            );
            file.write_all(line.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io(&path, e))?;
            Ok(Forgotten::Now(path))
        }
    }
}

/// The subject as the key store writes it (JSON) and whether it is forgotten, or `None` when it has no key there.
fn subject_state(path: &Path, text: &str, subject: &str) -> Result<Option<(String, bool)>> {
    let mut state = None;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Decode {
            path: path.to_path_buf(),
            reason: format!("line {}: not a JSON record ({e})", index + 1),
        })?;
        let Some(id) = record.get("subject") else {
            continue;
        };
        let text = match id {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if text != subject {
            continue;
        }
        let forgotten = record
            .get("forgotten")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let has_key = record.get("key").is_some_and(|k| !k.is_null());
        match (&mut state, forgotten) {
            (_, true) => state = Some((id.to_string(), true)),
            (None, false) if has_key => state = Some((id.to_string(), false)),
            _ => {}
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_encrypt_seals_decrypt_opens_with_that_key_only() {
        let key = [7u8; 32];
        let sealed = encrypt(&key, &[1u8; 12], "Ada Lovelace");
        assert_eq!(
            decrypt(&sealed, &STANDARD.encode(key)).as_deref(),
            Some("Ada Lovelace")
        );
        assert_eq!(decrypt(&sealed, &STANDARD.encode([8u8; 32])), None);
        assert_eq!(decrypt(&sealed, "not base64"), None);
        assert_eq!(decrypt("AAAA", &STANDARD.encode(key)), None);
    }
}
