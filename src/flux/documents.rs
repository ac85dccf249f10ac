//! The YAML documents of a file, each with the line it starts on and the positions of its
//! fields, so a finding points at the line and column in the user's file.

use serde_yaml::Value;

use crate::config::locate::Locator;

/// One document of a multi-document file.
pub struct Document {
    pub value: Value,
    /// Lines before the document in the file.
    offset: usize,
    locator: Locator,
}

impl Document {
    /// The 1-based line and column of the field at `path` (`spec.containers[0].env[1].value`).
    pub fn position(&self, path: &str) -> Option<(usize, usize)> {
        self.locator.find(path).map(|p| (p.line + self.offset, p.column))
    }

    /// `Kind/namespace/name` (`Kind/name` without a namespace), if it is an object.
    pub fn object(&self) -> Option<String> {
        let kind = self.value.get("kind")?.as_str()?;
        let metadata = self.value.get("metadata")?;
        let name = metadata.get("name")?.as_str()?;
        Some(match metadata.get("namespace").and_then(Value::as_str) {
            Some(namespace) => format!("{kind}/{namespace}/{name}"),
            None => format!("{kind}/{name}"),
        })
    }
}

/// The documents of `text` that parse, split at `---` lines; empty ones are left out.
pub fn parse(text: &str) -> Vec<Document> {
    let lines: Vec<&str> = text.lines().collect();
    let mut documents = Vec::new();
    let mut start = 0;
    while start < lines.len() {
        let end = (start + 1..lines.len()).find(|&i| lines[i].starts_with("---")).unwrap_or(lines.len());
        // The separator line itself belongs to no document.
        let first = if lines[start].starts_with("---") { start + 1 } else { start };
        let chunk = lines[first.min(end)..end].join("\n");
        if let Ok(value) = serde_yaml::from_str::<Value>(&chunk)
            && !value.is_null()
        {
            documents.push(Document { value, offset: first.min(end), locator: Locator::new(&chunk) });
        }
        start = end;
    }
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_lines_of_the_whole_file() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: b\n  namespace: lending\nstringData:\n  port: ${DB_PORT}\n";
        let documents = parse(text);
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[0].object().as_deref(), Some("ConfigMap/a"));
        assert_eq!(documents[1].object().as_deref(), Some("Secret/lending/b"));
        assert_eq!(documents[1].position("stringData.port"), Some((12, 9)));
    }
}
