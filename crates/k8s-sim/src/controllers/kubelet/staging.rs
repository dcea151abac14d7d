//! A node's mounted Filesystem volumes, shared by the pods on that node that use the same
//! volume, as the kubelet stages a CSI volume once per node (`NodeStageVolume`) and
//! bind-mounts it into each pod: two pods of one node never mount one ext4 image twice
//! (which would corrupt it). The last pod to let go unmounts it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// (node, volume image file).
pub type Key = (String, PathBuf);

struct Staged {
    loop_dev: String,
    mount: PathBuf,
    users: usize,
}

static STAGED: Mutex<BTreeMap<Key, Staged>> = Mutex::new(BTreeMap::new());

fn staged() -> std::sync::MutexGuard<'static, BTreeMap<Key, Staged>> {
    STAGED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The loop device and mount point of `image` on `node` if a pod there has it mounted,
/// counting one more user.
pub fn acquire(node: &str, image: &Path) -> Option<(String, PathBuf, Key)> {
    let key = (node.to_string(), image.to_path_buf());
    let mut m = staged();
    let s = m.get_mut(&key)?;
    s.users += 1;
    Some((s.loop_dev.clone(), s.mount.clone(), key))
}

/// Records a new mount of `image` on `node` with one user.
pub fn register(node: &str, image: &Path, loop_dev: &str, mount: &Path) -> Key {
    let key = (node.to_string(), image.to_path_buf());
    staged().insert(
        key.clone(),
        Staged {
            loop_dev: loop_dev.into(),
            mount: mount.into(),
            users: 1,
        },
    );
    key
}

/// One user fewer; true when it was the last (the caller unmounts).
pub fn release(key: &Key) -> bool {
    let mut m = staged();
    match m.get_mut(key) {
        Some(s) if s.users > 1 => {
            s.users -= 1;
            false
        }
        Some(_) => {
            m.remove(key);
            true
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_user_unmounts() {
        let img = Path::new("/nonexistent/staging-test.img");
        assert!(acquire("n1", img).is_none());
        let k = register("n1", img, "/dev/loop99", Path::new("/m"));
        let (dev, _, k2) = acquire("n1", img).expect("shared");
        assert_eq!(dev, "/dev/loop99");
        assert!(acquire("n2", img).is_none());
        assert!(!release(&k2));
        assert!(release(&k));
        assert!(acquire("n1", img).is_none());
    }
}
