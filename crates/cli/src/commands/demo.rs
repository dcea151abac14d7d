//! `s3mover demo`: a full backup, an incremental from a ranges file and two restores on a
//! scratch image, checked byte for byte — needs nothing but the binary.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::{Rng, RngCore};
use s3mover_engine::backup::{self, BackupOptions, ChangeInput, ParentChoice};
use s3mover_engine::restore::{self, RestoreOptions};
use s3mover_engine::storage::{open_store, StoreOptions};
use s3mover_engine::{InitOptions, Repository};
use s3mover_ranges::{BlockMetadataType, BlockRange, RangesFileWriter};
use zeroize::Zeroizing;

use crate::cli::{DemoArgs, GlobalArgs, OutputFormat, EXIT_OK};
use crate::output::{human_bytes, print_json};

const IMAGE_SIZE: u64 = 256 << 20;
const EXTENTS: u64 = 48;
const EXTENT_SIZE: u64 = 1 << 20;
const SMALL_WRITES: usize = 500;
const BLOCK: u64 = 4096;

pub async fn run(global: &GlobalArgs, args: &DemoArgs) -> Result<u8> {
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let say = |text: String| {
        if global.output != OutputFormat::Json && !global.quiet {
            println!("{text}");
        }
    };
    let image = dir.join("volume.img");
    let repo_dir = dir.join("repo");
    let mut rng = rand::thread_rng();

    say(format!(
        "1. A {} volume image with {} of random data in {EXTENTS} scattered 1 MiB extents: {}",
        human_bytes(IMAGE_SIZE),
        human_bytes(EXTENTS * EXTENT_SIZE),
        image.display()
    ));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&image)?;
    file.set_len(IMAGE_SIZE)?;
    let mut extent = vec![0u8; EXTENT_SIZE as usize];
    let slots = IMAGE_SIZE / EXTENT_SIZE;
    let chosen: BTreeSet<u64> = std::iter::from_fn(|| Some(rng.gen_range(0..slots)))
        .take(4 * EXTENTS as usize)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(EXTENTS as usize)
        .collect();
    for &slot in &chosen {
        rng.fill_bytes(&mut extent);
        file.write_all_at(&extent, slot * EXTENT_SIZE)?;
    }
    file.sync_all()?;
    let digest_v1 = digest_of(&image)?;

    say(format!(
        "2. An encrypted repository with 64 KiB chunks: {}",
        repo_dir.display()
    ));
    let store = open_store(
        &repo_dir.display().to_string(),
        &StoreOptions {
            create: true,
            ..StoreOptions::default()
        },
    )?;
    let repo = Repository::init(
        store,
        InitOptions {
            password: Some(Zeroizing::new("demo password".into())),
            ..InitOptions::default()
        },
    )
    .await?;

    let full = backup::backup(
        &repo,
        options(&image, ParentChoice::None, ChangeInput::Auto),
    )
    .await?;
    let fm = &full.manifest;
    say(format!("3. Full backup {}: read only the allocated extents ({}, found with SEEK_DATA), uploaded {} in {} objects in {:.2}s",
        fm.id, human_bytes(fm.stats.bytes_read), human_bytes(fm.stats.bytes_uploaded), fm.stats.objects_written, fm.stats.seconds));

    let mut offsets = BTreeSet::new();
    while offsets.len() < SMALL_WRITES {
        offsets.insert(rng.gen_range(0..IMAGE_SIZE / BLOCK) * BLOCK);
    }
    let mut block = vec![0u8; BLOCK as usize];
    for &offset in &offsets {
        rng.fill_bytes(&mut block);
        file.write_all_at(&block, offset)?;
    }
    file.sync_all()?;
    let digest_v2 = digest_of(&image)?;
    let ranges_path = dir.join("changed.json");
    let mut writer = RangesFileWriter::new(
        std::fs::File::create(&ranges_path)?,
        BlockMetadataType::FixedLength,
        IMAGE_SIZE,
    )?;
    for &offset in &offsets {
        writer.push(BlockRange::new(offset, BLOCK))?;
    }
    writer.finish()?.flush()?;
    say(format!(
        "4. Changed {SMALL_WRITES} scattered 4 KiB blocks ({}) and wrote their ranges to {}",
        human_bytes(SMALL_WRITES as u64 * BLOCK),
        ranges_path.display()
    ));

    let incr = backup::backup(
        &repo,
        options(
            &image,
            ParentChoice::Latest,
            ChangeInput::ChangedRangesFile(ranges_path.clone()),
        ),
    )
    .await?;
    let im = &incr.manifest;
    say(format!("5. Incremental backup {}: read {}, uploaded {} ({} of it metadata) — {:.1}% of the full backup's upload",
        im.id, human_bytes(im.stats.bytes_read), human_bytes(im.stats.bytes_uploaded), human_bytes(im.stats.metadata_bytes_uploaded),
        100.0 * im.stats.bytes_uploaded as f64 / fm.stats.bytes_uploaded.max(1) as f64));

    let mut results = Vec::new();
    for (label, manifest, expected) in [("full", fm, digest_v1), ("incremental", im, digest_v2)] {
        let target = dir.join(format!("restored-{label}.img"));
        let _ = std::fs::remove_file(&target);
        let report = restore::restore(
            &repo,
            manifest,
            RestoreOptions {
                target: target.clone(),
                assume_zeroed: false,
                overwrite: true,
                concurrency: 8,
                force: false,
                progress: None,
            },
        )
        .await?;
        let got = digest_of(&target)?;
        let ok = got == expected;
        say(format!(
            "6. Restored the {label} backup to {} in {:.2}s: BLAKE3 {} {} the original's",
            target.display(),
            report.seconds,
            &got[..16],
            if ok { "matches" } else { "DOES NOT match" }
        ));
        if !ok {
            bail!(s3mover_engine::Error::corrupt(format!(
                "demo: restored {label} backup differs from the original"
            )));
        }
        results.push(serde_json::json!({"backup": manifest.id, "kind": label, "digest": got, "matches": ok, "seconds": report.seconds}));
    }
    say("Both restores are byte-identical to the volume at backup time. Every backup restores on its own.".into());
    if global.output == OutputFormat::Json {
        print_json(&serde_json::json!({
            "full": {"id": fm.id, "bytesRead": fm.stats.bytes_read, "bytesUploaded": fm.stats.bytes_uploaded, "objectsWritten": fm.stats.objects_written},
            "incremental": {"id": im.id, "bytesRead": im.stats.bytes_read, "bytesUploaded": im.stats.bytes_uploaded, "metadataBytesUploaded": im.stats.metadata_bytes_uploaded},
            "restores": results,
        }))?;
    }
    Ok(EXIT_OK)
}

fn options(image: &Path, parent: ParentChoice, change: ChangeInput) -> BackupOptions {
    BackupOptions {
        volume: "demo".into(),
        source: image.to_path_buf(),
        parent,
        change,
        tags: vec!["demo=true".into()],
        upload_concurrency: Some(4),
        progress: None,
    }
}

fn digest_of(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}
