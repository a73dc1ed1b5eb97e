//! The generic iCalendar tree: components holding properties and sub-components, exactly as written
//! (names upper-cased, values still in their escaped wire form). The typed model in [`crate::event`] and
//! [`crate::calendar`] is built from it, and everything the typed model does not know stays here.

/// One parameter of a property, e.g. `PARTSTAT=ACCEPTED` or `MEMBER="mailto:a@x","mailto:b@x"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    /// Upper-cased parameter name.
    pub name: String,
    /// The values, with surrounding quotes removed. Never empty after parsing (`X=` gives one empty value).
    pub values: Vec<String>,
}

impl Param {
    /// A parameter with one value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Param {
        Param {
            name: name.into().to_ascii_uppercase(),
            values: vec![value.into()],
        }
    }

    /// The first value (most parameters have exactly one).
    pub fn value(&self) -> &str {
        self.values.first().map(String::as_str).unwrap_or("")
    }
}

/// One content line: `NAME;PARAM=VALUE:value`.
#[derive(Debug, Clone)]
pub struct Property {
    /// Upper-cased property name.
    pub name: String,
    /// Parameters in the order they were written.
    pub params: Vec<Param>,
    /// The value in its wire form: TEXT escapes (`\,` `\;` `\n` `\\`) are still in place, so a value the
    /// typed model does not understand is written back exactly as read.
    pub value: String,
    /// Physical line (1-based) where the property started in its source, 0 when built in code. Not part of
    /// equality.
    pub line: usize,
}

impl PartialEq for Property {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.params == other.params && self.value == other.value
    }
}
impl Eq for Property {}

impl Property {
    /// A property with a raw (already escaped) value and no parameters.
    pub fn new(name: impl Into<String>, raw_value: impl Into<String>) -> Property {
        Property {
            name: name.into().to_ascii_uppercase(),
            params: Vec::new(),
            value: raw_value.into(),
            line: 0,
        }
    }

    /// A TEXT property: `text` is escaped for the wire.
    pub fn text(name: impl Into<String>, text: &str) -> Property {
        Property::new(name, crate::ical::escape_text(text))
    }

    /// Adds a parameter (builder style).
    #[must_use]
    pub fn with_param(mut self, param: Param) -> Property {
        self.params.push(param);
        self
    }

    /// The parameter named `name` (case-insensitive), if present.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// The first value of the parameter named `name`, if present.
    pub fn param_value(&self, name: &str) -> Option<&str> {
        self.param(name).map(Param::value)
    }

    /// The value read as TEXT (escapes resolved).
    pub fn text_value(&self) -> String {
        crate::ical::unescape_text(&self.value)
    }
}

/// A component: `BEGIN:NAME` … `END:NAME`.
#[derive(Debug, Clone)]
pub struct Component {
    /// Upper-cased component name (`VEVENT`, `VALARM`, `X-FOO`, ...).
    pub name: String,
    /// Properties in the order they were written.
    pub properties: Vec<Property>,
    /// Sub-components in the order they were written.
    pub components: Vec<Component>,
    /// Physical line (1-based) of the `BEGIN:` line, 0 when built in code. Not part of equality.
    pub line: usize,
}

impl PartialEq for Component {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.properties == other.properties
            && self.components == other.components
    }
}
impl Eq for Component {}

impl Component {
    /// An empty component.
    pub fn new(name: impl Into<String>) -> Component {
        Component {
            name: name.into().to_ascii_uppercase(),
            properties: Vec::new(),
            components: Vec::new(),
            line: 0,
        }
    }

    /// The first property named `name` (case-insensitive).
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Every property named `name` (case-insensitive), in order.
    pub fn properties_named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Property> + 'a {
        self.properties
            .iter()
            .filter(move |p| p.name.eq_ignore_ascii_case(name))
    }
}
