//! Lessons: a scenario's `LESSON.md`, beside its pipeline, says what to look at and what to do, in numbered steps.
//! Both apps show it beside the data; a step that names a source or view in backticks, or an offset ("offset 100"),
//! takes the learner there when clicked (desktop) or selected (terminal).

use std::path::{Path, PathBuf};

/// The file a lesson is read from, in the pipeline's folder.
pub const LESSON_FILE: &str = "LESSON.md";

/// A lesson: a title, what it is about, and its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lesson {
    pub path: PathBuf,
    pub title: String,
    /// The paragraphs before the first step (and any between steps), as text.
    pub intro: Vec<String>,
    pub steps: Vec<Step>,
}

/// One step of a lesson.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The step's text, without its number (Markdown's backticks kept).
    pub text: String,
    /// The names the step puts in backticks, in order: the first that is a source or view is where it goes.
    pub names: Vec<String>,
    /// The offset it names ("offset 100", "offset 1,000"), if any.
    pub offset: Option<u64>,
}

/// Where a step takes the learner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Go {
    /// The source or view to show.
    pub table: Option<String>,
    /// The offset to travel to.
    pub offset: Option<u64>,
}

impl Step {
    /// Where this step goes, given the pipeline's tables (sources and views).
    #[must_use]
    pub fn go(&self, tables: &[String]) -> Go {
        Go {
            table: self.names.iter().find(|n| tables.contains(n)).cloned(),
            offset: self.offset,
        }
    }

    /// The text with Markdown's emphasis and backticks taken out, for display.
    #[must_use]
    pub fn plain(&self) -> String {
        plain(&self.text)
    }
}

impl Lesson {
    /// The lesson beside a pipeline file, if its folder has one (`None` as well when it cannot be read).
    #[must_use]
    pub fn beside(pipeline_file: &Path) -> Option<Lesson> {
        let path = pipeline_file.parent()?.join(LESSON_FILE);
        let text = std::fs::read_to_string(&path).ok()?;
        Some(Lesson::parse(path, &text))
    }

    /// Reads a lesson from Markdown: the first `#` heading is its title, each numbered item (`1.`) a step (its
    /// indented lines continue it), other paragraphs its introduction.
    #[must_use]
    pub fn parse(path: PathBuf, text: &str) -> Lesson {
        let mut lesson = Lesson {
            path,
            title: String::new(),
            intro: Vec::new(),
            steps: Vec::new(),
        };
        let mut paragraph = String::new();
        let mut in_step = false;
        let flush = |paragraph: &mut String, lesson: &mut Lesson, in_step: bool| {
            let text = paragraph.trim().to_owned();
            paragraph.clear();
            if text.is_empty() {
                return;
            }
            if in_step {
                lesson.steps.push(step(&text));
            } else {
                lesson.intro.push(plain(&text));
            }
        };
        for line in text.lines() {
            let trimmed = line.trim();
            if let Some(title) = trimmed.strip_prefix("# ") {
                flush(&mut paragraph, &mut lesson, in_step);
                if lesson.title.is_empty() {
                    title.trim().clone_into(&mut lesson.title);
                }
                in_step = false;
            } else if let Some(rest) = numbered(trimmed) {
                flush(&mut paragraph, &mut lesson, in_step);
                in_step = true;
                paragraph.push_str(rest);
            } else if trimmed.is_empty() {
                flush(&mut paragraph, &mut lesson, in_step);
                in_step = false;
            } else if trimmed.starts_with('#') {
                flush(&mut paragraph, &mut lesson, in_step);
                in_step = false;
                lesson
                    .intro
                    .push(trimmed.trim_start_matches('#').trim().to_owned());
            } else {
                if !paragraph.is_empty() {
                    paragraph.push(' ');
                }
                paragraph.push_str(trimmed);
            }
        }
        flush(&mut paragraph, &mut lesson, in_step);
        lesson
    }
}

/// The rest of a numbered list item (`12. text`), or `None`.
fn numbered(line: &str) -> Option<&str> {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    line[digits..].strip_prefix(". ").map(str::trim)
}

fn step(text: &str) -> Step {
    let names = text
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Step {
        text: text.to_owned(),
        names,
        offset: offset_in(text),
    }
}

/// The number after the word "offset" ("offset 100", "offset 1,000", "offset `250`").
fn offset_in(text: &str) -> Option<u64> {
    let lower = text.to_lowercase();
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("offset ") {
        rest = &rest[at + "offset ".len()..];
        let number: String = rest
            .trim_start_matches('`')
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '_')
            .filter(char::is_ascii_digit)
            .collect();
        if let Ok(offset) = number.parse() {
            return Some(offset);
        }
    }
    None
}

/// Markdown's backticks and emphasis taken out.
fn plain(text: &str) -> String {
    text.replace('`', "").replace("**", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_the_numbered_items_and_say_where_they_go() {
        let lesson = Lesson::parse(
            PathBuf::from("LESSON.md"),
            "# The bank\n\nMoney moves.\n\n1. Select `balances`.\n2. Drag the offset back to offset 1,000 and watch\n   `money_supply`.\n3. Read on.\n\nThe end.\n",
        );
        assert_eq!(lesson.title, "The bank");
        assert_eq!(lesson.intro, ["Money moves.", "The end."]);
        assert_eq!(lesson.steps.len(), 3);
        let tables = ["balances".to_owned(), "money_supply".to_owned()];
        assert_eq!(
            lesson.steps[0].go(&tables),
            Go {
                table: Some("balances".to_owned()),
                offset: None
            }
        );
        assert_eq!(
            lesson.steps[1].go(&tables),
            Go {
                table: Some("money_supply".to_owned()),
                offset: Some(1000)
            }
        );
        assert_eq!(
            lesson.steps[1].plain(),
            "Drag the offset back to offset 1,000 and watch money_supply."
        );
        assert_eq!(lesson.steps[2].go(&tables), Go::default());
    }
}
