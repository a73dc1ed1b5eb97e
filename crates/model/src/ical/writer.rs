//! Serialization of the generic tree: CRLF line ends, folding at 75 octets without splitting a UTF-8
//! character (RFC 5545 §3.1).

use crate::component::{Component, Property};

const FOLD_OCTETS: usize = 75;

/// Appends `line` to `out`, folded, followed by CRLF.
pub(crate) fn push_folded(out: &mut String, line: &str) {
    let mut rest = line;
    let mut first = true;
    loop {
        // A continuation line spends one octet on its leading space.
        let budget = if first { FOLD_OCTETS } else { FOLD_OCTETS - 1 };
        if !first {
            out.push(' ');
        }
        if rest.len() <= budget {
            out.push_str(rest);
            out.push_str("\r\n");
            return;
        }
        let mut cut = budget;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&rest[..cut]);
        out.push_str("\r\n");
        rest = &rest[cut..];
        first = false;
    }
}

fn needs_quotes(value: &str) -> bool {
    value.bytes().any(|b| matches!(b, b':' | b';' | b','))
}

/// The unfolded content line of `property`.
fn push_content_line(line: &mut String, property: &Property) {
    line.push_str(&property.name);
    for param in &property.params {
        line.push(';');
        line.push_str(&param.name);
        line.push('=');
        for (i, value) in param.values.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            // A parameter value can hold neither a DQUOTE nor a line feed, quoted or not; code-built
            // values with them are repaired rather than allowed to break the line structure. (A lone CR
            // can come from the wire, since lines split at LF only, and is written back unchanged.)
            let value: Cow<'_, str> = if value.bytes().any(|b| matches!(b, b'"' | b'\n')) {
                Cow::Owned(value.replace('"', "'").replace('\n', " "))
            } else {
                Cow::Borrowed(value)
            };
            if needs_quotes(&value) {
                line.push('"');
                line.push_str(&value);
                line.push('"');
            } else {
                line.push_str(&value);
            }
        }
    }
    line.push(':');
    if property.value.contains('\n') {
        line.push_str(&property.value.replace("\r\n", "\\n").replace('\n', "\\n"));
    } else {
        line.push_str(&property.value);
    }
}

use std::borrow::Cow;

/// Appends one property, folded. The line is built in place and only moved when it needs folding,
/// which most lines do not.
pub(crate) fn write_property(out: &mut String, property: &Property) {
    let start = out.len();
    push_content_line(out, property);
    if out.len() - start <= FOLD_OCTETS {
        out.push_str("\r\n");
    } else {
        let line = out.split_off(start);
        push_folded(out, &line);
    }
}

/// Appends a component and everything inside it.
pub(crate) fn write_component(out: &mut String, component: &Component) {
    push_folded(out, &format!("BEGIN:{}", component.name));
    for property in &component.properties {
        write_property(out, property);
    }
    for child in &component.components {
        write_component(out, child);
    }
    push_folded(out, &format!("END:{}", component.name));
}
