//! `s3mover init`: create a repository.

use anyhow::{bail, Result};
use s3mover_engine::KdfCost;
use s3mover_engine::{InitOptions, Repository};

use crate::cli::{GlobalArgs, InitArgs, OutputFormat, EXIT_OK};
use crate::output::{human_bytes, print_json};

pub async fn run(global: &GlobalArgs, args: &InitArgs) -> Result<u8> {
    let url = super::repo_url(global)?;
    let password = crate::password::resolve(global.password_file.as_deref())?;
    if password.is_none() && !args.insecure_no_encryption {
        return Err(crate::password::PasswordError(
            "init needs a password for the encrypted repository: set S3MOVER_PASSWORD, S3MOVER_PASSWORD_FILE or S3MOVER_PASSWORD_COMMAND (or pass --insecure-no-encryption)".into(),
        )
        .into());
    }
    let Ok(chunk_size) = u32::try_from(args.chunk_size) else {
        bail!(s3mover_engine::Error::Invalid(format!(
            "chunk size {} is too large",
            args.chunk_size
        )));
    };
    let kdf = KdfCost {
        memory_kib: u32::try_from(args.kdf_memory / 1024).unwrap_or(u32::MAX),
        iterations: args.kdf_passes,
        ..KdfCost::DEFAULT
    };
    kdf.validate()
        .map_err(|e| s3mover_engine::Error::Invalid(format!("--kdf-memory/--kdf-passes: {e}")))?;
    let store = super::open_and_remember(global, url, &super::store_options(&args.store, true))?;
    let options = InitOptions {
        kdf,
        chunk_size,
        password: if args.insecure_no_encryption {
            None
        } else {
            password.map(|p| p.secret)
        },
        ..InitOptions::default()
    };
    let repo = Repository::init(store, options).await?;
    let config = repo.config();
    match global.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "repository": crate::redact::redact(repo.store().description()),
            "id": config.id,
            "chunkSize": config.chunk_size,
            "encryption": config.encryption,
            "formatVersion": config.version,
        }))?,
        _ if !global.quiet => {
            println!(
                "created repository {} at {} ({}-byte chunks = {}, encryption: {})",
                config.id,
                crate::redact::redact(repo.store().description()),
                config.chunk_size,
                human_bytes(u64::from(config.chunk_size)),
                config.encryption
            );
            if !config.is_encrypted() {
                println!("warning: this repository is NOT encrypted; anyone who can read the store can read the backups");
            }
        }
        _ => {}
    }
    Ok(EXIT_OK)
}
