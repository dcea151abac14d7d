//! `s3mover backups` and `s3mover show`.

use anyhow::Result;

use crate::cli::{BackupsArgs, GlobalArgs, OutputFormat, ShowArgs, EXIT_OK};
use crate::output::{human_bytes, print_json, shown};

pub async fn backups(global: &GlobalArgs, args: &BackupsArgs) -> Result<u8> {
    let repo = super::open_repository(global, &args.store).await?;
    let manifests = repo.list_manifests(args.volume.as_deref()).await?;
    if global.output == OutputFormat::Json {
        let rows: Vec<_> = manifests
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id,
                    "volume": m.volume,
                    "time": m.time,
                    "parent": m.parent,
                    "sizeBytes": m.size_bytes,
                    "changeSource": m.change_source.as_str(),
                    "bytesUploaded": m.stats.bytes_uploaded,
                    "tags": m.tags,
                })
            })
            .collect();
        print_json(&rows)?;
        return Ok(EXIT_OK);
    }
    if manifests.is_empty() {
        if !global.quiet {
            println!("no backups");
        }
        return Ok(EXIT_OK);
    }
    println!(
        "{:<16}  {:<20}  {:<20}  {:>10}  {:<16}  {:>10}",
        "ID", "VOLUME", "TIME", "SIZE", "SOURCE", "UPLOADED"
    );
    for m in &manifests {
        println!(
            "{:<16}  {:<20}  {:<20}  {:>10}  {:<16}  {:>10}",
            m.id,
            shown(&m.volume),
            m.time,
            human_bytes(m.size_bytes),
            m.change_source.as_str(),
            human_bytes(m.stats.bytes_uploaded)
        );
    }
    Ok(EXIT_OK)
}

pub async fn show(global: &GlobalArgs, args: &ShowArgs) -> Result<u8> {
    let repo = super::open_repository(global, &args.store).await?;
    let m = repo
        .resolve_backup(&args.backup, args.volume.as_deref())
        .await?;
    if global.output == OutputFormat::Json {
        print_json(&m)?;
        return Ok(EXIT_OK);
    }
    println!("backup      {}", m.id);
    println!("volume      {}", shown(&m.volume));
    println!("time        {} (started {})", m.time, m.started_at);
    println!("parent      {}", m.parent.as_deref().unwrap_or("none"));
    println!(
        "size        {} ({} bytes)",
        human_bytes(m.size_bytes),
        m.size_bytes
    );
    println!(
        "chunks      {} slots of {}",
        m.slots,
        human_bytes(m.chunk_size)
    );
    println!("source      {} ({})", m.source, m.change_source.as_str());
    println!("digest      {}", m.root);
    if let Some(cbt) = &m.cbt {
        println!("cbt         {}", serde_json::to_string(cbt)?);
    }
    if !m.tags.is_empty() {
        let tags: Vec<_> = m.tags.iter().map(|t| shown(t)).collect();
        println!("tags        {}", tags.join(", "));
    }
    println!(
        "uploaded    {} in {} objects ({} metadata), read {}",
        human_bytes(m.stats.bytes_uploaded),
        m.stats.objects_written,
        human_bytes(m.stats.metadata_bytes_uploaded),
        human_bytes(m.stats.bytes_read)
    );
    Ok(EXIT_OK)
}
