//! Whether a block device is in use, for the messages of a restore that refuses it: the
//! mounts of the device and its partitions (`/proc/self/mountinfo`) and what holds it
//! (`/sys/dev/block/MAJ:MIN/holders`). The refusal itself rests on `O_EXCL`, which the kernel
//! enforces; these only name the user.

use std::path::Path;

/// `major:minor` of a device number, as mountinfo and sysfs spell it.
fn major_minor(rdev: u64) -> String {
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

/// The device numbers of `rdev` and of its partitions.
fn with_partitions(rdev: u64) -> Vec<String> {
    let own = major_minor(rdev);
    let mut out = vec![own.clone()];
    let Ok(entries) = std::fs::read_dir(Path::new("/sys/dev/block").join(&own)) else {
        return out;
    };
    for entry in entries.flatten() {
        let partition = entry.path();
        if !partition.join("partition").exists() {
            continue;
        }
        if let Ok(dev) = std::fs::read_to_string(partition.join("dev")) {
            out.push(dev.trim().to_string());
        }
    }
    out
}

/// Where the device numbered `rdev` (or one of its partitions) is mounted, as
/// `"mounted at /mnt"`; `None` when it is not, or mountinfo cannot be read.
pub(crate) fn mount_of(rdev: u64) -> Option<String> {
    let devices = with_partitions(rdev);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_in(&mountinfo, &devices)
}

/// The first mount in `mountinfo` text of one of `devices` (`major:minor`).
fn mount_in(mountinfo: &str, devices: &[String]) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2)?;
        let mount_point = fields.nth(1)?;
        devices
            .iter()
            .any(|d| d == device)
            .then(|| format!("mounted at {}", unescape_octal(mount_point)))
    })
}

/// Mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `" (held by dm-0, md127)"` when sysfs names holders of the device; empty otherwise.
pub(crate) fn holders_note(rdev: u64) -> String {
    let dir = Path::new("/sys/dev/block")
        .join(major_minor(rdev))
        .join("holders");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        " (mounted, or opened exclusively by another program)".into()
    } else {
        format!(" (held by {})", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_found_by_device_number() {
        let mountinfo = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                         40 22 7:3 / /mnt/with\\040space rw - ext4 /dev/loop3 rw\n";
        assert_eq!(
            mount_in(mountinfo, &["7:3".into()]).as_deref(),
            Some("mounted at /mnt/with space")
        );
        assert_eq!(
            mount_in(mountinfo, &["7:0".into(), "8:1".into()]).as_deref(),
            Some("mounted at /")
        );
        assert_eq!(mount_in(mountinfo, &["7:30".into()]), None);
        assert_eq!(mount_in("garbage\n\n1 2", &["7:3".into()]), None);
    }
}
