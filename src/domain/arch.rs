//! Architecture names: `noarch` or a Node `process.arch`-style name such as `x64` or `arm64`.

pub use reliquary_client::types::NOARCH;

/// Checks an architecture name against `api.md`: `noarch` or `^[a-z0-9][a-z0-9_-]{0,31}$`.
pub fn validate_architecture(arch: &str) -> Result<(), String> {
    let mut chars = arch.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && arch.len() <= 32 {
        Ok(())
    } else {
        Err(format!(
            "`{arch}` is not an architecture name: use `noarch` or a lowercase name such as `x64` or `arm64` (at most 32 characters)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_arch_names_are_valid() {
        for arch in [
            "noarch",
            "x64",
            "arm64",
            "arm",
            "ia32",
            "riscv64",
            "s390x",
            "ppc64",
            "a",
            "x86_64-musl",
        ] {
            assert_eq!(validate_architecture(arch), Ok(()), "{arch}");
        }
    }

    #[test]
    fn other_names_are_invalid() {
        let long = "a".repeat(33);
        for arch in [
            "",
            "X64",
            "-x64",
            "_x64",
            "x 64",
            "x64/..",
            "..",
            long.as_str(),
            "arm64\n",
        ] {
            assert!(validate_architecture(arch).is_err(), "{arch:?}");
        }
        assert!(validate_architecture(&"a".repeat(32)).is_ok());
    }
}
