//! A bounded fuzz run of every decoder of stored objects, through the commands that read them:
//! real repositories (encrypted, and plaintext so that damage reaches the decoders behind the
//! authentication) are copied, one object of any kind (config, key slot, manifest, index, pack,
//! tree table, `latest/` pointer, gc markers) is damaged — a byte flipped, cut short, emptied,
//! grown or replaced with random bytes — and `backups`, `check`, `verify --read-data`,
//! `restore`, `forget --dry-run` and `prune --dry-run` run on it. Each may fail, none may panic
//! or die of a signal.
//!
//! `S3MOVER_FUZZ_CASES` sets the number of cases (default 24); the seeds are the repositories
//! this test builds.

mod common;

use std::path::{Path, PathBuf};

use common::{files_under, make_image, write_at, Env};
use proptest::prelude::*;

/// A repository to damage copies of, with its object files.
struct Seed {
    env: Env,
    objects: Vec<PathBuf>,
}

fn build_seed(encrypted: bool) -> Seed {
    let env = Env::new();
    let mut init = vec![
        "init",
        "--chunk-size",
        "64K",
        "--kdf-memory",
        "8M",
        "--kdf-passes",
        "1",
    ];
    if !encrypted {
        init.push("--insecure-no-encryption");
    }
    env.ok(&init);
    let image = env.path("disk.img");
    make_image(&image, 2 << 20, &[(0, 256 << 10), (1 << 20, 300 << 10)], 11);
    let image_arg = image.to_str().expect("path");
    env.ok(&["backup", image_arg, "--volume", "a", "--tag", "k=v"]);
    write_at(&image, 70_000, &[0x5a; 9000]);
    env.ok(&["backup", image_arg, "--volume", "a"]);
    env.ok(&["backup", image_arg, "--volume", "b"]);
    let objects = files_under(&env.repo);
    assert!(objects.len() >= 8, "{objects:?}");
    Seed { env, objects }
}

fn seeds() -> &'static [Seed; 2] {
    static SEEDS: std::sync::OnceLock<[Seed; 2]> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| [build_seed(true), build_seed(false)])
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, mask: u8 },
    Truncate { keep: usize },
    Empty,
    Append(Vec<u8>),
    Random(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        2 => any::<usize>().prop_map(|keep| Damage::Truncate { keep }),
        1 => Just(Damage::Empty),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Append),
        1 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Damage::Random),
    ]
}

fn apply(path: &Path, damage: &Damage) {
    let mut bytes = std::fs::read(path).expect("read object");
    match damage {
        Damage::Flip { at, mask } if !bytes.is_empty() => {
            let at = at % bytes.len();
            bytes[at] ^= mask;
        }
        Damage::Flip { .. } => bytes.push(0),
        Damage::Truncate { keep } => bytes.truncate(keep % bytes.len().max(1)),
        Damage::Empty => bytes.clear(),
        Damage::Append(extra) => bytes.extend_from_slice(extra),
        Damage::Random(random) => bytes = random.clone(),
    }
    std::fs::write(path, bytes).expect("write object");
}

fn cases() -> u32 {
    std::env::var("S3MOVER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_damaged_object_makes_a_command_panic(
        encrypted in any::<bool>(),
        which in any::<prop::sample::Index>(),
        damage in damage(),
    ) {
        let seed = &seeds()[usize::from(!encrypted)];
        let scratch = tempfile::tempdir().expect("tempdir");
        let repo = scratch.path().join("repo");
        copy_dir(&seed.env.repo, &repo);
        let object = which.get(&seed.objects);
        let relative = object.strip_prefix(&seed.env.repo).expect("inside the repository");
        apply(&repo.join(relative), &damage);
        let target = scratch.path().join("restored.img");
        let target = target.to_str().expect("path");
        for args in [
            &["backups"][..],
            &["check"],
            &["verify", "--read-data"],
            &["restore", "latest", "--volume", "a", "--target", target],
            &["forget", "--keep-last", "1", "--dry-run"],
            &["prune", "--dry-run"],
        ] {
            let out = seed.env.command(args).env("S3MOVER_REPO", &repo).output().expect("run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(
                out.status.code().is_some() && out.status.code() != Some(101) && !stderr.contains("panicked"),
                "{:?} on {} damaged by {:?} ({:?}): {}",
                args, relative.display(), damage, out.status, stderr
            );
        }
    }
}
