//! How Kubernetes turns a container's `command`, `args` and the image's ENTRYPOINT and CMD into
//! the program it runs, and expands `$(VAR)` references in them and in `env` values.

use std::collections::BTreeMap;

use crate::controllers::ImageConfig;

/// The argv a container runs: `command` replaces the ENTRYPOINT (and drops the CMD), `args`
/// replaces the CMD; `$(VAR)` is expanded from the container's environment.
pub fn argv(
    command: &[String],
    args: &[String],
    image: &ImageConfig,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let (head, tail): (&[String], &[String]) = match (command.is_empty(), args.is_empty()) {
        (false, false) => (command, args),
        (false, true) => (command, &[]),
        (true, false) => (&image.entrypoint, args),
        (true, true) => (&image.entrypoint, &image.cmd),
    };
    let expand_cmd = !command.is_empty();
    let expand_args = !args.is_empty();
    let mut out = Vec::with_capacity(head.len() + tail.len());
    out.extend(head.iter().map(|s| {
        if expand_cmd {
            expand(s, env)
        } else {
            s.clone()
        }
    }));
    out.extend(tail.iter().map(|s| {
        if expand_args {
            expand(s, env)
        } else {
            s.clone()
        }
    }));
    out
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined one is left
/// as written, and `$$` is an escaped `$`.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match env.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_and_args_against_the_image() {
        let img = ImageConfig {
            entrypoint: v(&["/bin/s3mover"]),
            cmd: v(&["--help"]),
            env: vec![],
            rootfs: None,
        };
        let env = BTreeMap::new();
        assert_eq!(argv(&[], &[], &img, &env), v(&["/bin/s3mover", "--help"]));
        assert_eq!(
            argv(&[], &v(&["backup"]), &img, &env),
            v(&["/bin/s3mover", "backup"])
        );
        assert_eq!(argv(&v(&["/bin/sh"]), &[], &img, &env), v(&["/bin/sh"]));
        assert_eq!(
            argv(&v(&["/bin/sh", "-c"]), &v(&["true"]), &img, &env),
            v(&["/bin/sh", "-c", "true"])
        );
    }

    #[test]
    fn variable_references() {
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$A ${A} $", &env), "$A ${A} $");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn image_arguments_are_not_expanded() {
        let img = ImageConfig {
            entrypoint: v(&["/bin/echo"]),
            cmd: v(&["$(A)"]),
            env: vec![],
            rootfs: None,
        };
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(argv(&[], &[], &img, &env), v(&["/bin/echo", "$(A)"]));
    }
}
