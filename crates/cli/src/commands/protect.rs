//! `s3mover protect`: exempt a backup from every retention rule, or lift that.

use anyhow::Result;
use s3mover_engine::retention;

use crate::cli::{GlobalArgs, OutputFormat, ProtectArgs, EXIT_OK};
use crate::output::print_json;

pub async fn run(global: &GlobalArgs, args: &ProtectArgs) -> Result<u8> {
    let repo = super::open_repository(global, &args.store).await?;
    let id = retention::protect(&repo, &args.backup, args.remove).await?;
    if global.output == OutputFormat::Json {
        print_json(&serde_json::json!({ "id": id, "protected": !args.remove }))?;
    } else if !global.quiet {
        if args.remove {
            println!("backup {id} is no longer protected");
        } else {
            println!("backup {id} is protected: no retention rule removes it");
        }
    }
    Ok(EXIT_OK)
}
