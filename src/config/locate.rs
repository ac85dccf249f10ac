//! Maps a field path such as `services[1].kind` to its line and column in a YAML text.
//!
//! serde_yaml reports positions for syntax and type errors only; checks that run after
//! deserialisation (unknown kind, duplicate name …) use this index to point at the value.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Positions of every node in a YAML document, by field path.
#[derive(Debug, Default)]
pub struct Locator {
    positions: HashMap<String, Position>,
}

impl Locator {
    pub fn new(text: &str) -> Self {
        let mut builder = Builder::default();
        // A document that does not parse has no positions; serde_yaml reports that error.
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        Locator { positions: builder.positions }
    }

    /// The position of the node at `path`, or of its nearest ancestor that exists.
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(position) = self.positions.get(path) {
                return Some(*position);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, index: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
}

impl Builder {
    /// The path of the node that the next event starts, or `None` for a mapping key.
    fn next_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Mapping { key: None, .. }) => None,
            Some(Frame::Mapping { path, key: Some(key) }) => {
                let child = join(path, key);
                if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
                    *key = None;
                }
                Some(child)
            }
            Some(Frame::Sequence { path, index }) => {
                let child = format!("{path}[{index}]");
                *index += 1;
                Some(child)
            }
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        self.positions.insert(path.to_string(), Position { line: mark.line(), column: mark.col() + 1 });
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => match self.next_path() {
                Some(path) => self.record(&path, mark),
                None => {
                    if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
                        *key = Some(value);
                    }
                }
            },
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A complex mapping key is not used by devenv's files; index it under "?".
                let path = self.next_path().unwrap_or_else(|| "?".to_string());
                self.record(&path, mark);
                self.stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Mapping { path, key: None }
                } else {
                    Frame::Sequence { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                self.next_path();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "project: shop\nservices:\n  - name: db\n    kind: rds-mariadb\n  - name: cache\n    kind: redis\n    keys:\n      HOST: host\n";

    #[test]
    fn finds_nested_values() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.find("project"), Some(Position { line: 1, column: 10 }));
        assert_eq!(locator.find("services[1].kind"), Some(Position { line: 6, column: 11 }));
        assert_eq!(locator.find("services[1].keys.HOST"), Some(Position { line: 8, column: 13 }));
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.find("services[0].version"), locator.find("services[0]"));
        assert_eq!(locator.find("nothing.here"), None);
    }
}
