//! Checking dashboards against real expositions: the metric names a PromQL expression reads
//! ([`metric_names`], a small tokenizer: functions, aggregations, their label lists, label
//! matchers, ranges, strings and numbers are not metric names) and the names of the series a
//! Prometheus text exposition has ([`exposition_names`], with the `_total`, `_bucket`, `_sum`
//! and `_count` suffixes its `# TYPE` lines imply).

use std::collections::BTreeSet;

/// Words that are PromQL operators or modifiers, never metric names.
const KEYWORDS: [&str; 11] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
];

/// Keywords followed by a parenthesized list of label names.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names `expr` selects, in order of appearance, without repeats. Grafana's
/// variables (`$__rate_interval`, `${datasource}`) are skipped like any other `$` word.
pub fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    // The previous word, when it was a keyword that takes a label list.
    let mut pending_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                // Label matchers and ranges hold no metric names (strings inside are skipped).
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            if chars[i] == '\\' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if pending_list => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                pending_list = false;
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && is_name_char(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // Numbers, durations (5m) and exponents (1e3): one token.
                while i < chars.len() && (is_name_char(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if is_name_start(c) => {
                let start = i;
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                // A function or aggregation: `f(`, or `sum by (...) (` / `sum without (...) (`.
                let rest: String = chars[next..].iter().take(8).collect();
                let clause = ["by", "without"].iter().any(|kw| {
                    rest.strip_prefix(kw)
                        .is_some_and(|after| !after.starts_with(is_name_char))
                });
                let call = chars.get(next) == Some(&'(') || clause;
                if LABEL_LISTS.contains(&word.as_str()) {
                    // `group_left` may stand without a list.
                    pending_list = call;
                } else {
                    pending_list = false;
                    if !call && !KEYWORDS.contains(&word.as_str()) && !names.contains(&word) {
                        names.push(word);
                    }
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every series name of a Prometheus text exposition: those of its samples, and those its
/// `# TYPE` lines imply (`counter`: `_total`; `histogram`: `_bucket`, `_sum`, `_count`;
/// `info`: `_info`; others: the name itself), so a family without samples yet still counts.
pub fn exposition_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The value of the series `series` (name and labels, exactly as exposed) in a Prometheus
/// text, `None` when absent.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_yield_the_metric_names_they_read() {
        // (expression, names)
        #[rustfmt::skip]
        let cases: &[(&str, &[&str])] = &[
            ("up", &["up"]),
            ("sum by (kind, type) (rate(mesh_controller_config_pushes_total[$__rate_interval]))",
             &["mesh_controller_config_pushes_total"]),
            ("histogram_quantile(0.99, sum by (le) (rate(a_bucket{kind=\"agent\"}[5m])))", &["a_bucket"]),
            ("min(x_seconds) - time()", &["x_seconds"]),
            ("sum(a) / ignoring(reason) group_left sum(b)", &["a", "b"]),
            ("a{job=~\"mesh.*\", le=\"+Inf\"} > bool 0 and on(instance) c", &["a", "c"]),
            ("count by (version) (v) offset 1h", &["v"]),
            ("sum without (instance) (rate(a[5m] @ 1609746000))", &["a"]),
            ("label_replace(a, \"dst\", \"$1\", \"src\", \"(.*)\")", &["a"]),
            ("1 - avg(b) * 1e3 + 0.5", &["b"]),
            ("a{l=\"}\"} + b", &["a", "b"]),
            ("sum(a) + sum(a)", &["a"]),
            ("vector(1)", &[]),
            ("sum by(kind)(c)", &["c"]),
            ("${datasource_var} + d:recorded:rate5m", &["d:recorded:rate5m"]),
        ];
        for (expr, want) in cases {
            assert_eq!(metric_names(expr), *want, "{expr}");
        }
    }

    #[test]
    fn expositions_name_their_series_with_the_suffixes_of_their_types() {
        let text = "# HELP c A counter.\n# TYPE c counter\nc_total{a=\"b\"} 1\n\
                    # TYPE h histogram\n# TYPE g gauge\n# TYPE i info\ng 2\n\
                    untyped_sample 3\n# EOF\n";
        let names = exposition_names(text);
        let want: BTreeSet<String> = [
            "c_total",
            "h_bucket",
            "h_sum",
            "h_count",
            "g",
            "i_info",
            "untyped_sample",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn samples_are_found_by_their_exact_series() {
        let text = "a_total{k=\"v\"} 3\na_total{k=\"v2\"} 4\nb 1.5\n";
        assert_eq!(sample(text, "a_total{k=\"v\"}"), Some(3.0));
        assert_eq!(sample(text, "b"), Some(1.5));
        assert_eq!(sample(text, "a_total"), None);
        assert_eq!(sample(text, "c"), None);
    }
}
