//! Option tables generated from the declarations: Markdown for the READMEs (checked by a
//! test in each backend), plain text for `sdx options`.

use super::Options;

impl<C: Default> Options<C> {
    fn default_text(&self, key: &super::OptionKey<C>, defaults: &C) -> String {
        if key.secret {
            return String::new();
        }
        key.show(defaults)
    }

    fn env_text(&self, key: &super::OptionKey<C>) -> Vec<String> {
        // Aliases' variables are read too, but the table shows the canonical one.
        let mut vars = vec![self.env_var(key.name)];
        if key.entries {
            vars = vec![format!("{}_<NAME>", self.env_var(key.name))];
        }
        for f in self.fallbacks.iter().filter(|f| f.key == Some(key.name)) {
            vars.push(f.var.to_string());
        }
        vars
    }

    /// The Markdown table of every key (key, variables, type, default, meaning), then
    /// the variables the engine's own client reads.
    pub fn markdown_table(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let defaults = C::default();
        let mut out = String::from(
            "| key | environment | type | default | meaning |\n|---|---|---|---|---|\n",
        );
        for k in &self.keys {
            let mut name = format!("`{}`", k.name);
            if k.entries {
                name.push_str(&format!(", `{}.<NAME>`", k.name));
            }
            for a in &k.aliases {
                name.push_str(&format!(" (`{a}`)"));
            }
            let env = self
                .env_text(k)
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let default = self.default_text(k, &defaults);
            let default = if default.is_empty() {
                "—".to_string()
            } else {
                format!("`{}`", cell(&default))
            };
            let mut doc = k.doc.to_string();
            if k.secret {
                doc.push_str(" Secret: never shown.");
            }
            for c in &k.conflicts {
                doc.push_str(&format!(" Excludes `{c}`."));
            }
            for f in self.fallbacks.iter().filter(|f| f.key == Some(k.name)) {
                doc.push_str(&format!(" `{}`: {}", f.var, f.doc));
            }
            out.push_str(&format!(
                "| {name} | {env} | {} | {default} | {} |\n",
                cell(&k.kind.describe()),
                cell(&doc)
            ));
        }
        let engine: Vec<_> = self.fallbacks.iter().filter(|f| f.key.is_none()).collect();
        if !engine.is_empty() {
            out.push('\n');
            for f in engine {
                out.push_str(&format!("`{}`: {}\n", f.var, f.doc));
            }
        }
        out
    }

    /// A plain-text listing for terminals (`sdx options <scheme>`).
    pub fn text_table(&self) -> String {
        let defaults = C::default();
        let mut out = format!(
            "{} options (--opt {}.<key>=<value>, {}<KEY>, or [{}] in the config file):\n",
            self.scheme,
            self.scheme,
            self.env_prefix(),
            self.scheme
        );
        for k in &self.keys {
            let default = self.default_text(k, &defaults);
            out.push_str(&format!(
                "\n  {}{} ({}{})\n      {}\n      env: {}\n",
                k.name,
                if k.entries { ", <key>.<NAME>" } else { "" },
                k.kind.describe(),
                if default.is_empty() {
                    String::new()
                } else {
                    format!(", default {default}")
                },
                k.doc,
                self.env_text(k).join(", ")
            ));
            if !k.aliases.is_empty() {
                out.push_str(&format!("      also spelled: {}\n", k.aliases.join(", ")));
            }
        }
        for f in self.fallbacks.iter().filter(|f| f.key.is_none()) {
            out.push_str(&format!("\n  {}: {}\n", f.var, f.doc));
        }
        out
    }

    /// Checks the README at `path` like [`Self::check_readme`]; with the environment
    /// variable `SDX_BLESS_README` set, rewrites a stale table in place instead (the
    /// markers must exist).
    pub fn check_readme_file(&self, path: &std::path::Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let Err(e) = self.check_readme(&text) else {
            return Ok(());
        };
        if std::env::var_os("SDX_BLESS_README").is_none() {
            return Err(format!(
                "{e}\n(or run the test with SDX_BLESS_README=1 to rewrite it)"
            ));
        }
        let open = format!("<!-- options:{} -->", self.scheme);
        let close = format!("<!-- /options:{} -->", self.scheme);
        let (head, rest) = text.split_once(&open).ok_or_else(|| e.clone())?;
        let (_, tail) = rest.split_once(&close).ok_or(e)?;
        let fresh = format!("{head}{open}\n{}{close}{tail}", self.markdown_table());
        std::fs::write(path, fresh).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks that `readme` holds this table between `<!-- options:<scheme> -->` and
    /// `<!-- /options:<scheme> -->`; the error shows the table to paste.
    pub fn check_readme(&self, readme: &str) -> Result<(), String> {
        let open = format!("<!-- options:{} -->", self.scheme);
        let close = format!("<!-- /options:{} -->", self.scheme);
        let expected = self.markdown_table();
        let found = readme
            .split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&close))
            .map(|(table, _)| table.trim());
        match found {
            Some(t) if t == expected.trim() => Ok(()),
            Some(_) => Err(format!(
                "the README's {} option table disagrees with the declarations; replace it with:\n{open}\n{}{close}",
                self.scheme, expected
            )),
            None => Err(format!(
                "the README has no {} option table; add:\n{open}\n{}{close}",
                self.scheme, expected
            )),
        }
    }
}

impl<C: Default + serde::Serialize> Options<C> {
    /// The top-level fields of `C`'s serialized default that no key declares (neither
    /// as a key, an alias, nor as the head of dotted keys such as `timeout.maxMinutes`):
    /// a field missing here can be set from a file section's JSON round-trip but not from
    /// the environment or `--opt`, and the README table would not show it. Each backend's
    /// README test asserts this is empty.
    pub fn undeclared_fields(&self) -> Vec<String> {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(C::default()) else {
            return Vec::new();
        };
        fields
            .keys()
            .filter(|field| {
                !self.keys.iter().any(|k| {
                    std::iter::once(&k.name).chain(&k.aliases).any(|name| {
                        *name == field.as_str()
                            || name
                                .strip_prefix(field.as_str())
                                .is_some_and(|rest| rest.starts_with('.'))
                    })
                })
            })
            .cloned()
            .collect()
    }
}
