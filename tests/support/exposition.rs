//! Reading Prometheus' text exposition (what `/metrics` serves) as series, so a test
//! asserts on one series' value instead of searching the text for a line that another
//! series, or a leftover, could also match.

/// One sample line: a metric name, its labels sorted by name, and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// The value of the series `name` whose labels are exactly `labels` (in any order), if
/// the exposition has it.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    series(text)
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// Every sample line of the exposition; comments and blank lines skipped.
pub fn series(text: &str) -> impl Iterator<Item = Sample> + '_ {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
}

fn parse_line(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse::<f64>().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some(Sample {
            name: head.to_owned(),
            labels: Vec::new(),
            value,
        });
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    'n' => val.push('\n'),
                    other => val.push(other),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        labels.push((key, val));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels.sort();
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_found_by_its_exact_labels_only() {
        let text = "# HELP x y\n# TYPE m gauge\nm{b=\"2\",a=\"q\\\"uote\"} 10\nm{a=\"q\\\"uote\"} 1\nplain 3.5\n";
        assert_eq!(
            sample(text, "m", &[("a", "q\"uote"), ("b", "2")]),
            Some(10.0)
        );
        assert_eq!(sample(text, "m", &[("a", "q\"uote")]), Some(1.0));
        assert_eq!(sample(text, "m", &[("b", "2")]), None);
        assert_eq!(sample(text, "plain", &[]), Some(3.5));
        assert_eq!(series(text).count(), 3);
    }
}
