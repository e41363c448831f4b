//! Maven's version order (a compact form of `ComparableVersion`): versions split into numbers
//! and qualifiers at `.`, `-` and digit/letter changes; numbers compare as numbers and above
//! qualifiers; the known qualifiers rank `alpha < beta < milestone < rc < snapshot < (release)
//! < sp`, unknown ones after them by text; trailing zeros and release qualifiers do not count
//! (`1.0` and `1.0.0` and `1-ga` are equal).

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// Digits without leading zeros (compared by length, then text: no overflow).
    Number(String),
    /// A qualifier's rank and, for unknown ones, its text (lowercase).
    Qualifier(u8, String),
}

const RELEASE: u8 = 5;

fn qualifier(text: &str) -> Item {
    let lower = text.to_ascii_lowercase();
    let rank = match lower.as_str() {
        "alpha" | "a" => 0,
        "beta" | "b" => 1,
        "milestone" | "m" => 2,
        "rc" | "cr" => 3,
        "snapshot" => 4,
        "" | "ga" | "final" | "release" => RELEASE,
        "sp" => 6,
        _ => 7,
    };
    Item::Qualifier(rank, if rank == 7 { lower } else { String::new() })
}

fn items(version: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut digits = false;
    let flush = |current: &mut String, digits: bool, items: &mut Vec<Item>| {
        if current.is_empty() {
            return;
        }
        let item = if digits {
            let trimmed = current.trim_start_matches('0');
            Item::Number(trimmed.to_string())
        } else {
            qualifier(current)
        };
        items.push(item);
        current.clear();
    };
    for c in version.chars() {
        if c == '.' || c == '-' || c == '+' {
            flush(&mut current, digits, &mut items);
            continue;
        }
        let is_digit = c.is_ascii_digit();
        if !current.is_empty() && is_digit != digits {
            flush(&mut current, digits, &mut items);
        }
        digits = is_digit;
        current.push(c);
    }
    flush(&mut current, digits, &mut items);
    while matches!(
        items.last(),
        Some(Item::Number(n)) if n.is_empty()
    ) || matches!(items.last(), Some(Item::Qualifier(RELEASE, _)))
    {
        items.pop();
    }
    items
}

fn compare_item(a: Option<&Item>, b: Option<&Item>) -> Ordering {
    let zero = Item::Number(String::new());
    let release = Item::Qualifier(RELEASE, String::new());
    match (a, b) {
        (None, None) => Ordering::Equal,
        // A missing item is `0` next to a number and the release next to a qualifier.
        (None, Some(b @ Item::Number(_))) => compare_item(Some(&zero), Some(b)),
        (None, Some(b)) => compare_item(Some(&release), Some(b)),
        (Some(_), None) => compare_item(b, a).reverse(),
        (Some(Item::Number(x)), Some(Item::Number(y))) => {
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        (Some(Item::Number(_)), Some(Item::Qualifier(..))) => Ordering::Greater,
        (Some(Item::Qualifier(..)), Some(Item::Number(_))) => Ordering::Less,
        (Some(Item::Qualifier(r, x)), Some(Item::Qualifier(s, y))) => {
            r.cmp(s).then_with(|| x.cmp(y))
        }
    }
}

/// Orders two versions as Maven does (ties broken by text, so the order is total).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (x, y) = (items(a), items(b));
    for i in 0..x.len().max(y.len()) {
        let order = compare_item(x.get(i), y.get(i));
        if order != Ordering::Equal {
            return order;
        }
    }
    a.cmp(b)
}

/// Sorts `values` by the version `key` gives, oldest first.
pub fn sort<T>(values: &mut [T], key: impl Fn(&T) -> &str) {
    values.sort_by(|a, b| compare(key(a), key(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_as_maven_does() {
        let mut versions = vec![
            "1.10",
            "1.2",
            "1.0-SNAPSHOT",
            "1.0",
            "1.0-rc1",
            "1.0-alpha-2",
            "1.0-sp1",
            "1.0-beta",
            "1.0.1",
            "2.0-zeta",
            "2.0",
        ];
        versions.sort_by(|a, b| compare(a, b));
        assert_eq!(
            versions,
            [
                "1.0-alpha-2",
                "1.0-beta",
                "1.0-rc1",
                "1.0-SNAPSHOT",
                "1.0",
                "1.0-sp1",
                "1.0.1",
                "1.2",
                "1.10",
                "2.0",
                "2.0-zeta"
            ]
        );
        assert_eq!(items("1.0.0"), items("1"));
        assert_eq!(items("1-ga"), items("1"));
        assert_eq!(compare("99999999999999999999999", "1"), Ordering::Greater);
    }
}
