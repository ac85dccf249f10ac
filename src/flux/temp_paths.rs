//! Paths in Flux's messages, mapped back to the repository.
//!
//! kustomize-controller unpacks each artifact into a temporary directory of its own
//! (`MkdirTemp("", "kustomization-")`) and builds there, so its errors name files such as
//! `/tmp/kustomization-100557898/apps/base/search-api/deployment.yaml`. devenv's artifacts
//! hold the files at their repository paths, so what follows the temporary directory is the
//! user's path.

/// The temporary directory's name before its random digits.
const TEMP_DIR_PREFIX: &str = "kustomization-";

/// `message` with each path in one of kustomize-controller's temporary directories replaced
/// by the repository path (`.` for the directory itself).
pub fn to_repository(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(found) = find_temp_dir(rest) {
        out.push_str(&rest[..found.start]);
        let after = &rest[found.end..];
        match after.strip_prefix('/') {
            Some(path) if path.starts_with(|c: char| !ends_path(c)) => rest = path,
            _ => {
                out.push('.');
                rest = after.strip_prefix('/').unwrap_or(after);
            }
        }
    }
    out.push_str(rest);
    out
}

/// The byte range of the first `/…/kustomization-<digits>` in `text`: an absolute path whose
/// last component is the temporary directory.
fn find_temp_dir(text: &str) -> Option<std::ops::Range<usize>> {
    let mut from = 0;
    while let Some(at) = text[from..].find(TEMP_DIR_PREFIX).map(|i| from + i) {
        from = at + TEMP_DIR_PREFIX.len();
        let digits = text[from..].find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len() - from);
        let end = from + digits;
        let start = text[..at].rfind(ends_path).map(|i| i + 1).unwrap_or(0);
        let is_absolute_dir = text[start..at].starts_with('/') && text[..at].ends_with('/');
        let whole_name = text[end..].chars().next().is_none_or(|c| c == '/' || ends_path(c));
        if digits > 0 && is_absolute_dir && whole_name {
            return Some(start..end);
        }
    }
    None
}

/// Characters around a path in Flux's messages.
fn ends_path(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\'' | '"' | '(' | ')' | '=' | ',' | ':' | '[' | ']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_yaml_error_names_the_repository_file() {
        assert_eq!(
            to_repository(
                "kustomize build failed: /tmp/kustomization-100557898/apps/base/search-api/deployment.yaml: MalformedYAMLError: yaml: line 20: did not find expected key"
            ),
            "kustomize build failed: apps/base/search-api/deployment.yaml: MalformedYAMLError: yaml: line 20: did not find expected key"
        );
    }

    #[test]
    fn every_path_of_an_accumulation_error_is_mapped() {
        let message = "kustomize build failed: accumulating resources: accumulation err='accumulating resources from '../base/serch-api': evalsymlink failure on '/tmp/kustomization-3829383/apps/base/serch-api' : lstat /tmp/kustomization-3829383/apps/base/serch-api: no such file or directory': must build at directory: not a valid directory: evalsymlink failure on '/tmp/kustomization-3829383/apps/base/serch-api'";
        assert_eq!(
            to_repository(message),
            "kustomize build failed: accumulating resources: accumulation err='accumulating resources from '../base/serch-api': evalsymlink failure on 'apps/base/serch-api' : lstat apps/base/serch-api: no such file or directory': must build at directory: not a valid directory: evalsymlink failure on 'apps/base/serch-api'"
        );
    }

    #[test]
    fn another_temporary_root_and_the_directory_itself() {
        assert_eq!(
            to_repository(
                "kustomization path not found: stat /var/folders/x1/T/kustomization-42/apps/locl: no such file or directory"
            ),
            "kustomization path not found: stat apps/locl: no such file or directory"
        );
        assert_eq!(to_repository("cannot read '/tmp/kustomization-42'"), "cannot read '.'");
    }

    #[test]
    fn other_text_stays_as_it_is() {
        for message in [
            "Applied revision: latest@sha256:1234",
            "Kustomization/flux-system/kustomization-2 not ready",
            "see docs/kustomization-100.md",
            "dependency 'flux-system/kustomization-7' is not ready",
        ] {
            assert_eq!(to_repository(message), message);
        }
    }
}
