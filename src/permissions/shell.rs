//! What a shell command line runs, as far as it can be told before it runs:
//! every simple command, found with a bash grammar (`brush-parser`) inside
//! pipelines, lists, compound commands, functions, subshells, command and
//! process substitutions, here-documents, `eval` and `sh -c` strings, and
//! behind wrappers such as `sudo`, `env`, `xargs` or `find -exec`.
//!
//! This is for a policy that asks before risky actions, not a sandbox. Where
//! the program or the script a command runs is only known when it runs (`$X`,
//! `$(…)` as the program, a script piped into a shell), the command says so
//! in [`SimpleCommand::unknown`], and a line that does not parse is reported
//! by [`Analysis::unparsed`]: the policy asks about both.

use brush_parser::ast::{self, CommandPrefixOrSuffixItem as Item};
use brush_parser::word::{self as bword, BraceExpressionMember, BraceExpressionOrText, WordPiece};
use brush_parser::{Parser, ParserOptions};

/// One simple command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleCommand {
    /// The words, quotes removed, assignments dropped; an expansion is kept
    /// as written (`$HOME`, `$(date)`).
    pub words: Vec<String>,
    /// Targets of `>`, `>>`, `&>` and `>|` redirections.
    pub writes: Vec<String>,
    /// The command as written.
    pub text: String,
    /// Why what this command runs is only known when it runs, if it is.
    pub unknown: Option<String>,
    /// Whether the first word is known before running (no expansion in it).
    program_known: bool,
}

impl SimpleCommand {
    /// The program's name without its directory; `None` when it is only
    /// known once the line runs (`$X`, `$(…)`, a glob).
    pub(crate) fn program(&self) -> Option<&str> {
        if !self.program_known {
            return None;
        }
        let first = self.words.first()?;
        Some(first.rsplit('/').next().unwrap_or(first))
    }

    pub(crate) fn args(&self) -> &[String] {
        self.words.get(1..).unwrap_or(&[])
    }
}

/// A command line taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub commands: Vec<SimpleCommand>,
    /// Why the line (or a script inside it) could not be parsed, if it could not.
    pub unparsed: Option<String>,
}

/// Longest line parsed; a longer one is reported as unparsed.
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// Deepest nesting of brackets, quotes and keywords parsed (the grammar
/// recurses once per level, and a blocking thread's stack is finite).
const MAX_NESTING: usize = 20;
/// Scripts within scripts (`eval`, `sh -c`, `$(…)`) looked into.
const MAX_DEPTH: usize = 12;
/// Simple commands reported for one line; the rest are summarised as unknown.
const MAX_COMMANDS: usize = 4096;
/// Braces in one word that brace expansion looks into.
const MAX_BRACES: usize = 8;
/// Words a brace expansion may produce before it counts as unknown.
const MAX_BRACE_WORDS: usize = 64;

/// The simple commands of a line (see [`analyze`]).
pub fn simple_commands(line: &str) -> Vec<SimpleCommand> {
    analyze(line).commands
}

/// Parses a line and lists every simple command it would run.
pub fn analyze(line: &str) -> Analysis {
    let mut walker = Walker::default();
    match parse(line) {
        Ok(program) => walker.program(&program, 0),
        Err(why) => walker.unparsed = Some(why),
    }
    Analysis {
        commands: walker.out,
        unparsed: walker.unparsed,
    }
}

fn options() -> ParserOptions {
    ParserOptions {
        // `*(…)` and friends are words to bash only with `shopt -s extglob`,
        // which a non-interactive shell does not have.
        enable_extended_globbing: false,
        ..ParserOptions::default()
    }
}

fn parse(script: &str) -> Result<ast::Program, String> {
    if script.len() > MAX_LINE {
        return Err(format!("it is longer than {MAX_LINE} bytes"));
    }
    if nesting(script) > MAX_NESTING {
        return Err(format!("it nests more than {MAX_NESTING} levels deep"));
    }
    if huge_descriptor(script) {
        return Err("it redirects a file descriptor number too large for the shell".to_owned());
    }
    let parsed = guarded(|| {
        Parser::new(std::io::Cursor::new(script.as_bytes()), &options()).parse_program()
    })
    .ok_or_else(|| "the grammar failed on it".to_owned())?;
    parsed.map_err(|e| e.to_string())
}

/// Runs a step of the grammar, turning a panic in it into `None`: the
/// grammar panics on some input (an fd number over `u32`, found by
/// fuzzing), and a line it fails on must ask, not take the policy down.
fn guarded<T>(step: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).ok()
}

/// An upper bound on how deeply a script nests: every opening bracket,
/// quote-like delimiter or block keyword counts, whether or not quoted.
fn nesting(script: &str) -> usize {
    let mut depth: usize = 0;
    let mut deepest = 0;
    let mut in_backquote = false;
    for word in script.split(|c: char| c.is_whitespace() || c == ';') {
        match word {
            "if" | "case" | "for" | "while" | "until" | "select" | "do" | "then" | "{" => {
                depth += 1
            }
            "fi" | "esac" | "done" | "}" => depth = depth.saturating_sub(1),
            _ => {}
        }
        for c in word.chars() {
            match c {
                '(' | '{' | '[' => depth += 1,
                ')' | '}' | ']' => depth = depth.saturating_sub(1),
                '`' => {
                    in_backquote = !in_backquote;
                    if in_backquote {
                        depth += 1;
                    } else {
                        depth = depth.saturating_sub(1);
                    }
                }
                _ => {}
            }
            deepest = deepest.max(depth);
        }
        deepest = deepest.max(depth);
    }
    deepest
}

/// Whether a redirection names a descriptor over 9 digits (`99999999999>x`),
/// which the grammar panics on; bash refuses them too.
fn huge_descriptor(script: &str) -> bool {
    let bytes = script.as_bytes();
    let mut run = 0;
    for &b in bytes {
        if b.is_ascii_digit() {
            run += 1;
        } else {
            if run > 9 && (b == b'<' || b == b'>') {
                return true;
            }
            run = 0;
        }
    }
    false
}

/// A word after quote removal.
#[derive(Debug, Clone)]
struct Field {
    text: String,
    /// No expansion, glob or unknown escape in it.
    known: bool,
    /// A process substitution (`<(…)`).
    process: bool,
}

#[derive(Default)]
struct Walker {
    out: Vec<SimpleCommand>,
    unparsed: Option<String>,
}

/// Where a simple command takes its standard input from, for shells.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    Terminal,
    Pipe,
}

impl Walker {
    fn push(&mut self, command: SimpleCommand) {
        if self.out.len() < MAX_COMMANDS {
            self.out.push(command);
        } else if self.out.len() == MAX_COMMANDS {
            self.out.push(SimpleCommand {
                words: Vec::new(),
                writes: Vec::new(),
                text: String::new(),
                unknown: Some(format!("the line runs more than {MAX_COMMANDS} commands")),
                program_known: false,
            });
        }
    }

    fn unknown(&mut self, text: &str, why: String) {
        self.push(SimpleCommand {
            words: Vec::new(),
            writes: Vec::new(),
            text: text.trim().to_owned(),
            unknown: Some(why),
            program_known: false,
        });
    }

    /// A script found inside the line (`eval`, `sh -c`, `$(…)`).
    fn script(&mut self, script: &str, depth: usize, context: &str) {
        if depth >= MAX_DEPTH {
            self.unknown(
                context,
                format!("it nests scripts more than {MAX_DEPTH} deep"),
            );
            return;
        }
        match parse(script) {
            Ok(program) => self.program(&program, depth + 1),
            Err(why) => self.unknown(
                context,
                format!("the script it runs does not parse ({why})"),
            ),
        }
    }

    fn program(&mut self, program: &ast::Program, depth: usize) {
        for list in &program.complete_commands {
            self.list(list, depth);
        }
    }

    fn list(&mut self, list: &ast::CompoundList, depth: usize) {
        for item in &list.0 {
            for (_, pipeline) in &item.0 {
                for (i, command) in pipeline.seq.iter().enumerate() {
                    let input = if i == 0 { Input::Terminal } else { Input::Pipe };
                    self.command(command, input, depth);
                }
            }
        }
    }

    fn command(&mut self, command: &ast::Command, input: Input, depth: usize) {
        match command {
            ast::Command::Simple(simple) => self.simple(simple, input, depth),
            ast::Command::Compound(compound, redirects) => {
                self.compound(compound, depth);
                self.redirects_alone(redirects.as_ref(), &command.to_string(), depth);
            }
            ast::Command::Function(function) => {
                self.compound(&function.body.0, depth);
                self.redirects_alone(function.body.1.as_ref(), &command.to_string(), depth);
            }
            ast::Command::ExtendedTest(test, redirects) => {
                self.test_expr(&test.expr, depth);
                self.redirects_alone(redirects.as_ref(), &command.to_string(), depth);
            }
        }
    }

    fn test_expr(&mut self, expr: &ast::ExtendedTestExpr, depth: usize) {
        use ast::ExtendedTestExpr as E;
        match expr {
            E::And(a, b) | E::Or(a, b) => {
                self.test_expr(a, depth);
                self.test_expr(b, depth);
            }
            E::Not(a) | E::Parenthesized(a) => self.test_expr(a, depth),
            E::UnaryTest(_, w) => {
                self.word(w, depth);
            }
            E::BinaryTest(_, a, b) => {
                self.word(a, depth);
                self.word(b, depth);
            }
        }
    }

    fn compound(&mut self, compound: &ast::CompoundCommand, depth: usize) {
        use ast::CompoundCommand as C;
        match compound {
            C::Arithmetic(a) => {
                self.arithmetic(&a.expr.value, depth);
                // The grammar reads `( (cmd) )` as `((…))`, and bash itself
                // runs `((cmd) )` as subshells: what parses as a script is
                // walked as one too.
                let arithmetic = guarded(|| brush_parser::arithmetic::parse(&a.expr.value))
                    .is_some_and(|r| r.is_ok());
                match parse(&a.expr.value) {
                    Ok(program) if depth < MAX_DEPTH => self.program(&program, depth + 1),
                    Ok(_) => self.unknown(
                        &a.expr.value,
                        format!("it nests scripts more than {MAX_DEPTH} deep"),
                    ),
                    Err(_) if arithmetic => {}
                    Err(why) => self.unknown(
                        &a.expr.value,
                        format!("`(( … ))` holds neither arithmetic nor commands ({why})"),
                    ),
                }
            }
            C::ArithmeticForClause(f) => {
                for expr in [&f.initializer, &f.condition, &f.updater]
                    .into_iter()
                    .flatten()
                {
                    self.arithmetic(&expr.value, depth);
                }
                self.list(&f.body.list, depth);
            }
            C::BraceGroup(b) => self.list(&b.list, depth),
            C::Subshell(s) => self.list(&s.list, depth),
            C::ForClause(f) => {
                for w in f.values.iter().flatten() {
                    self.word(w, depth);
                }
                self.list(&f.body.list, depth);
            }
            C::CaseClause(c) => {
                self.word(&c.value, depth);
                for case in &c.cases {
                    for w in &case.patterns {
                        self.word(w, depth);
                    }
                    if let Some(list) = &case.cmd {
                        self.list(list, depth);
                    }
                }
            }
            C::IfClause(i) => {
                self.list(&i.condition, depth);
                self.list(&i.then, depth);
                for e in i.elses.iter().flatten() {
                    if let Some(condition) = &e.condition {
                        self.list(condition, depth);
                    }
                    self.list(&e.body, depth);
                }
            }
            C::WhileClause(w) | C::UntilClause(w) => {
                self.list(&w.0, depth);
                self.list(&w.1.list, depth);
            }
            C::Coprocess(c) => self.command(&c.body, Input::Terminal, depth),
        }
    }

    /// `$(( … ))` and `(( … ))`: the expression may hold command substitutions.
    fn arithmetic(&mut self, expr: &str, depth: usize) {
        if expr.contains("$(") || expr.contains('`') {
            self.text_pieces(expr, depth, expr);
        }
    }

    /// Redirections of a compound command: its writes, and commands in its
    /// here-documents or process substitutions.
    fn redirects_alone(&mut self, redirects: Option<&ast::RedirectList>, text: &str, depth: usize) {
        let Some(redirects) = redirects else { return };
        let mut command = SimpleCommand {
            words: Vec::new(),
            writes: Vec::new(),
            text: text.trim().to_owned(),
            unknown: None,
            program_known: false,
        };
        let mut stdin = None;
        for redirect in &redirects.0 {
            self.redirect(redirect, &mut command.writes, &mut stdin, depth);
        }
        if !command.writes.is_empty() {
            self.push(command);
        }
    }

    /// One redirection: a write target goes to `writes`; a here-document or
    /// here-string's text to `stdin` (a shell would run it).
    fn redirect(
        &mut self,
        redirect: &ast::IoRedirect,
        writes: &mut Vec<String>,
        stdin: &mut Option<Stdin>,
        depth: usize,
    ) {
        use ast::{IoFileRedirectKind as K, IoFileRedirectTarget as T, IoRedirect as R};
        match redirect {
            R::File(fd, kind, target) => match target {
                T::Filename(w) => {
                    let fields = self.word(w, depth);
                    let text = join(&fields);
                    match kind {
                        K::Write | K::Append | K::Clobber | K::ReadAndWrite => writes.push(text),
                        K::Read if fd.is_none_or(|fd| fd == 0) => {
                            // `sh < script`: the shell runs a file, like `sh script`.
                            *stdin = Some(Stdin::None);
                        }
                        _ => {}
                    }
                }
                T::Fd(_) => {}
                T::Duplicate(w) => {
                    let fields = self.word(w, depth);
                    let text = join(&fields);
                    // `>&file` writes a file; `>&2`, `>&-` duplicate or close.
                    if matches!(kind, K::DuplicateOutput)
                        && !text.chars().all(|c| c.is_ascii_digit() || c == '-')
                    {
                        writes.push(text);
                    }
                }
                T::ProcessSubstitution(_, subshell) => {
                    self.list(&subshell.list, depth);
                    if matches!(kind, K::Read) && fd.is_none_or(|fd| fd == 0) {
                        *stdin = Some(Stdin::Text(Field {
                            text: "<(…)".to_owned(),
                            known: false,
                            process: true,
                        }));
                    }
                }
            },
            R::HereDocument(fd, doc) => {
                let text = if doc.requires_expansion {
                    self.heredoc(&doc.doc.value, depth)
                } else {
                    Field {
                        text: doc.doc.value.clone(),
                        known: true,
                        process: false,
                    }
                };
                if fd.is_none_or(|fd| fd == 0) {
                    *stdin = Some(Stdin::Text(text));
                }
            }
            R::HereString(fd, w) => {
                let fields = self.word(w, depth);
                if fd.is_none_or(|fd| fd == 0) {
                    *stdin = Some(Stdin::Text(Field {
                        known: fields.iter().all(|f| f.known),
                        text: join(&fields),
                        process: false,
                    }));
                }
            }
            R::OutputAndError(w, _) => {
                let fields = self.word(w, depth);
                writes.push(join(&fields));
            }
        }
    }

    /// A here-document's body as a shell would feed it: expansions in it run.
    fn heredoc(&mut self, body: &str, depth: usize) -> Field {
        match guarded(|| bword::parse_heredoc(body, &options())) {
            Some(Ok(pieces)) => {
                let mut field = Field {
                    text: String::new(),
                    known: true,
                    process: false,
                };
                self.pieces(&pieces, body, &mut field, depth);
                field
            }
            _ => {
                self.unknown(body, "a here-document in it does not parse".to_owned());
                Field {
                    text: body.to_owned(),
                    known: false,
                    process: false,
                }
            }
        }
    }

    fn simple(&mut self, simple: &ast::SimpleCommand, input: Input, depth: usize) {
        let text = simple.to_string();
        let mut fields: Vec<Field> = Vec::new();
        let mut writes = Vec::new();
        let mut stdin = None;
        let prefix = simple.prefix.iter().flat_map(|p| p.0.iter());
        let suffix = simple.suffix.iter().flat_map(|s| s.0.iter());
        let mut items: Vec<Option<&Item>> = prefix.map(Some).collect();
        items.push(None); // the command word's place
        items.extend(suffix.map(Some));
        for item in items {
            match item {
                None => {
                    if let Some(w) = &simple.word_or_name {
                        fields.extend(self.word(w, depth));
                    }
                }
                Some(Item::IoRedirect(r)) => self.redirect(r, &mut writes, &mut stdin, depth),
                Some(Item::Word(w)) => fields.extend(self.word(w, depth)),
                Some(Item::AssignmentWord(_, w)) => {
                    let parsed = self.word(w, depth);
                    // Before the program it only sets a variable; after
                    // it (`export X=1`, `env X=1 …`) it is an argument.
                    if !fields.is_empty() {
                        fields.extend(parsed);
                    }
                }
                Some(Item::ProcessSubstitution(_, subshell)) => {
                    self.list(&subshell.list, depth);
                    fields.push(Field {
                        text: "<(…)".to_owned(),
                        known: false,
                        process: true,
                    });
                }
            }
        }
        if fields.is_empty() {
            if !writes.is_empty() {
                self.push(SimpleCommand {
                    words: Vec::new(),
                    writes,
                    text,
                    unknown: None,
                    program_known: false,
                });
            }
            return;
        }
        let stdin = match (stdin, input) {
            (Some(redirected), _) => redirected,
            (None, Input::Pipe) => Stdin::Pipe,
            (None, Input::Terminal) => Stdin::None,
        };
        self.run(fields, writes, &text, &stdin, depth);
    }

    /// A command about to run: reported, then what it runs in turn (a
    /// wrapper's command, a shell's script).
    fn run(
        &mut self,
        fields: Vec<Field>,
        writes: Vec<String>,
        text: &str,
        stdin: &Stdin,
        depth: usize,
    ) {
        let program_known = fields.first().is_some_and(|f| f.known);
        let mut command = SimpleCommand {
            words: fields.iter().map(|f| f.text.clone()).collect(),
            writes,
            text: text.trim().to_owned(),
            unknown: None,
            program_known,
        };
        if !program_known {
            command.unknown = Some(format!(
                "its program (`{}`) is only known when it runs",
                fields.first().map_or("", |f| f.text.as_str())
            ));
            self.push(command);
            return;
        }
        let inner = self.look_through(&fields, text, stdin, depth);
        if let Some(why) = inner.unknown {
            command.unknown = Some(why);
        }
        self.push(command);
        if depth >= MAX_DEPTH {
            if !inner.commands.is_empty() || !inner.scripts.is_empty() {
                self.unknown(
                    text,
                    format!("it nests commands more than {MAX_DEPTH} deep"),
                );
            }
            return;
        }
        for fields in inner.commands {
            // A wrapped command reads the wrapper's input (`… | sudo sh`).
            self.run(fields, Vec::new(), text, stdin, depth + 1);
        }
        for script in inner.scripts {
            self.script(&script, depth, text);
        }
    }

    /// The fields of a word: its brace expansion, then each piece with
    /// quotes removed; commands in substitutions are walked on the way.
    fn word(&mut self, word: &ast::Word, depth: usize) -> Vec<Field> {
        let raws = match brace_expand(&word.value) {
            Some(raws) => raws,
            None => {
                return vec![Field {
                    text: word.value.clone(),
                    known: false,
                    process: false,
                }];
            }
        };
        let mut fields = Vec::new();
        for raw in raws {
            let mut field = Field {
                text: String::new(),
                known: true,
                process: false,
            };
            match guarded(|| bword::parse(&raw, &options())) {
                Some(Ok(pieces)) => self.pieces(&pieces, &raw, &mut field, depth),
                _ => {
                    self.unknown(&raw, "a word in it does not parse".to_owned());
                    field.text = raw.clone();
                    field.known = false;
                }
            }
            fields.push(field);
        }
        fields
    }

    /// Walks the substitutions in a piece of text that the word grammar
    /// understands (an arithmetic expression, a parameter's default value).
    fn text_pieces(&mut self, text: &str, depth: usize, context: &str) {
        match guarded(|| bword::parse(text, &options())) {
            Some(Ok(pieces)) => {
                let mut field = Field {
                    text: String::new(),
                    known: true,
                    process: false,
                };
                self.pieces(&pieces, text, &mut field, depth);
            }
            _ => self.unknown(
                context,
                "an expansion in it does not parse, and may run commands".to_owned(),
            ),
        }
    }

    fn pieces(
        &mut self,
        pieces: &[bword::WordPieceWithSource],
        source: &str,
        field: &mut Field,
        depth: usize,
    ) {
        for piece in pieces {
            let written = source
                .get(piece.start_index..piece.end_index)
                .unwrap_or_default();
            match &piece.piece {
                WordPiece::Text(t) => {
                    let bracket = t.find('[').is_some_and(|i| t[i..].contains(']'));
                    if t.contains(['*', '?']) || bracket {
                        // A glob: the program it names depends on the files there.
                        field.known = false;
                    }
                    field.text.push_str(t);
                }
                WordPiece::SingleQuotedText(t) => field.text.push_str(t),
                WordPiece::AnsiCQuotedText(t) => match ansi_c(t) {
                    Some(t) => field.text.push_str(&t),
                    None => {
                        field.text.push_str(written);
                        field.known = false;
                    }
                },
                WordPiece::DoubleQuotedSequence(inner)
                | WordPiece::GettextDoubleQuotedSequence(inner) => {
                    // Inner indices count from the same word as the outer ones.
                    let before = field.known;
                    self.pieces(inner, source, field, depth);
                    // Quoted globs are literal.
                    field.known = before && field.known;
                }
                WordPiece::TildeExpansion(_) => field.text.push_str(written),
                WordPiece::EscapeSequence(e) => {
                    field.text.push_str(e.strip_prefix('\\').unwrap_or(e));
                }
                WordPiece::ParameterExpansion(p) => {
                    field.known = false;
                    field.text.push_str(&parameter_text(p, written));
                    // `${X:-$(cmd)}`: what is inside the braces may run commands.
                    if let Some(inner) =
                        written.strip_prefix("${").and_then(|w| w.strip_suffix('}'))
                        && (inner.contains("$(") || inner.contains('`'))
                    {
                        self.text_pieces(inner, depth, written);
                    }
                }
                WordPiece::CommandSubstitution(script)
                | WordPiece::BackquotedCommandSubstitution(script) => {
                    field.known = false;
                    field.text.push_str(written);
                    self.script(script, depth, written);
                }
                WordPiece::ArithmeticExpression(expr) => {
                    field.known = false;
                    field.text.push_str(written);
                    self.arithmetic(&expr.value, depth);
                }
            }
        }
    }

    /// What a command runs besides itself: the command behind a wrapper
    /// (`sudo`, `env`, `xargs`, `find -exec`…) and scripts handed to a shell
    /// (`sh -c`, `eval`, a here-document). Unknown when a shell reads its
    /// script from a pipe or an expansion.
    fn look_through(
        &mut self,
        fields: &[Field],
        text: &str,
        stdin: &Stdin,
        _depth: usize,
    ) -> Inner {
        let mut inner = Inner::default();
        let program = fields[0].text.rsplit('/').next().unwrap_or("");
        let args = &fields[1..];
        // `command -v sudo` looks a name up, it runs nothing.
        let lookup = program == "command" && args.iter().any(|a| a.text == "-v" || a.text == "-V");
        if let Some(spec) = wrapper(program).filter(|_| !lookup) {
            for start in command_starts(args, &spec) {
                if let Some(rest) = args.get(start..)
                    && !rest.is_empty()
                {
                    inner.commands.push(rest.to_vec());
                }
            }
            if program == "env" {
                // `env -S 'cmd args'` splits its value into a command.
                for pair in args.windows(2) {
                    if matches!(pair[0].text.as_str(), "-S" | "--split-string") {
                        inner.script(&pair[1], "env -S");
                    }
                }
            }
            return inner;
        }
        match program {
            "find" => {
                let mut i = 0;
                while i < args.len() {
                    if matches!(
                        args[i].text.as_str(),
                        "-exec" | "-execdir" | "-ok" | "-okdir"
                    ) {
                        let end = args[i + 1..]
                            .iter()
                            .position(|a| a.text == ";" || a.text == "+")
                            .map_or(args.len(), |p| i + 1 + p);
                        if end > i + 1 {
                            inner.commands.push(args[i + 1..end].to_vec());
                        }
                        i = end;
                    }
                    i += 1;
                }
            }
            "eval" => {
                let script = Field {
                    text: args
                        .iter()
                        .map(|a| a.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    known: args.iter().all(|a| a.known),
                    process: false,
                };
                inner.script(&script, "eval");
            }
            "busybox" | "toybox" if !args.is_empty() => inner.commands.push(args.to_vec()),
            "alias" => {
                // `alias ll='rm -rf ~'`: the text runs wherever the alias is used.
                for a in args {
                    if let Some((_, value)) = a.text.split_once('=') {
                        inner.script(
                            &Field {
                                text: value.to_owned(),
                                known: a.known,
                                process: false,
                            },
                            "alias",
                        );
                    }
                }
            }
            "trap" => {
                if let Some(action) = args.first()
                    && !action.text.starts_with('-')
                {
                    inner.script(action, "trap");
                }
            }
            "watch" => {
                let mut i = 0;
                while args.get(i).is_some_and(|a| a.text.starts_with('-')) {
                    let valued = ["-n", "--interval", "-q", "--equexit", "-s", "--shell"];
                    i += if valued.contains(&args[i].text.as_str()) {
                        2
                    } else {
                        1
                    };
                }
                let rest: Vec<&Field> = args.iter().skip(i).collect();
                if !rest.is_empty() {
                    inner.script(
                        &Field {
                            text: rest
                                .iter()
                                .map(|a| a.text.as_str())
                                .collect::<Vec<_>>()
                                .join(" "),
                            known: rest.iter().all(|a| a.known),
                            process: false,
                        },
                        "watch",
                    );
                }
            }
            "su" | "runuser" | "script" | "flock" => {
                for pair in args.windows(2) {
                    if matches!(pair[0].text.as_str(), "-c" | "--command") {
                        inner.script(&pair[1], program);
                    }
                }
                if program == "flock" {
                    // `flock FILE cmd…`
                    let rest: Vec<Field> = args
                        .iter()
                        .skip_while(|a| a.text.starts_with('-'))
                        .skip(1)
                        .cloned()
                        .collect();
                    if !rest.is_empty() && rest[0].text != "-c" {
                        inner.commands.push(rest);
                    }
                }
            }
            "source" | "." => {
                if let Some(file) = args.first() {
                    shell_file(file, stdin, &mut inner);
                }
            }
            _ if is_shell(program) => shell(program, args, stdin, &mut inner),
            _ if is_interpreter(program) => {
                // `curl … | python3`: code from a pipe is not seen.
                let script_given = args
                    .iter()
                    .any(|a| !a.text.starts_with('-') || a.text == "-");
                let inline = args.iter().any(|a| {
                    matches!(a.text.as_str(), "-c" | "-e" | "-E" | "-m" | "--eval" | "-r")
                });
                if !inline
                    && (!script_given || args.iter().any(|a| a.text == "-"))
                    && let Stdin::Pipe = stdin
                {
                    inner.unknown = Some(format!(
                        "{program} runs code it reads from a pipe, which is only known when it runs"
                    ));
                }
            }
            _ => {}
        }
        let _ = text;
        inner
    }
}

/// What a command's standard input is, for shells reading scripts from it.
#[derive(Clone)]
enum Stdin {
    None,
    Pipe,
    /// A here-document or here-string (or `<(…)`, which is unknown).
    Text(Field),
}

#[derive(Default)]
struct Inner {
    commands: Vec<Vec<Field>>,
    scripts: Vec<String>,
    unknown: Option<String>,
}

impl Inner {
    fn script(&mut self, script: &Field, what: &str) {
        if script.known {
            self.scripts.push(script.text.clone());
        } else {
            self.unknown = Some(format!(
                "the script {what} runs (`{}`) is only known when it runs",
                script.text
            ));
        }
    }
}

fn is_shell(program: &str) -> bool {
    matches!(
        program,
        "sh" | "bash"
            | "dash"
            | "zsh"
            | "ksh"
            | "mksh"
            | "ash"
            | "yash"
            | "posh"
            | "rbash"
            | "fish"
    )
}

fn is_interpreter(program: &str) -> bool {
    let base = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    matches!(
        base,
        "python" | "perl" | "ruby" | "node" | "php" | "lua" | "tclsh" | "osascript" | "pwsh"
    )
}

/// A shell's script: `-c`, a file, or its standard input.
fn shell(program: &str, args: &[Field], stdin: &Stdin, inner: &mut Inner) {
    let mut i = 0;
    let mut from_stdin = false;
    while i < args.len() {
        let a = &args[i].text;
        if a == "--" || a == "-" {
            i += 1;
            break;
        }
        if (a.starts_with('-') || a.starts_with('+')) && a.len() > 1 {
            if a.starts_with("--") {
                // `--rcfile FILE`, `--init-file FILE` take a value.
                if matches!(a.as_str(), "--rcfile" | "--init-file") {
                    i += 1;
                }
                i += 1;
                continue;
            }
            let flags = &a[1..];
            if a.starts_with('-') && flags.contains('c') {
                // The first argument after the options is the script.
                let script = args[i + 1..]
                    .iter()
                    .position(|f| !f.text.starts_with('-') && !f.text.starts_with('+'))
                    .map(|p| &args[i + 1 + p]);
                match script {
                    Some(script) => inner.script(script, program),
                    None => {
                        inner.unknown = Some(format!("`{program} -c` without a script"));
                    }
                }
                return;
            }
            if flags.contains('s') {
                from_stdin = true;
            }
            if flags.contains('o') || flags.contains('O') {
                i += 1;
            }
            i += 1;
            continue;
        }
        break;
    }
    match args.get(i) {
        Some(file) if !from_stdin => shell_file(file, stdin, inner),
        _ => shell_stdin(program, stdin, inner),
    }
}

/// A shell running a file (`sh FILE`, `source FILE`): like running
/// `./FILE`, unless the file is its input or an expansion.
fn shell_file(file: &Field, stdin: &Stdin, inner: &mut Inner) {
    let reads_stdin = matches!(
        file.text.as_str(),
        "/dev/stdin" | "-" | "/dev/fd/0" | "/proc/self/fd/0"
    );
    if reads_stdin {
        shell_stdin(&file.text, stdin, inner);
    } else if file.process || file.text.starts_with("/dev/fd/") || file.text.starts_with("/proc/") {
        inner.unknown = Some(format!(
            "the script it runs comes from another command's output (`{}`)",
            file.text
        ));
    } else if !file.known {
        inner.unknown = Some(format!(
            "the script it runs (`{}`) is only known when it runs",
            file.text
        ));
    }
}

fn shell_stdin(program: &str, stdin: &Stdin, inner: &mut Inner) {
    match stdin {
        Stdin::None => {}
        Stdin::Pipe => {
            inner.unknown = Some(format!(
                "{program} runs commands it reads from a pipe, which are only known when it runs"
            ));
        }
        Stdin::Text(doc) if doc.process => {
            inner.unknown = Some(format!(
                "{program} runs commands it reads from another command's output"
            ));
        }
        Stdin::Text(doc) => inner.script(doc, program),
    }
}

/// How a wrapper's own options look, so that the command it runs can be found.
struct WrapperSpec {
    /// Options that take the next word as their value.
    valued: &'static [&'static str],
    /// Options known to take no value.
    flags: &'static [&'static str],
    /// Words before the command that are the wrapper's own (`timeout 5`).
    positional: usize,
}

fn wrapper(program: &str) -> Option<WrapperSpec> {
    let spec = |valued, flags, positional| {
        Some(WrapperSpec {
            valued,
            flags,
            positional,
        })
    };
    match program {
        "sudo" => spec(
            &[
                "-u",
                "-g",
                "-C",
                "-D",
                "-h",
                "-p",
                "-r",
                "-t",
                "-U",
                "-T",
                "-R",
                "--user",
                "--group",
                "--chdir",
                "--chroot",
                "--prompt",
                "--role",
                "--type",
                "--close-from",
                "--other-user",
                "--host",
                "--command-timeout",
            ],
            &[
                "-E",
                "-H",
                "-n",
                "-S",
                "-b",
                "-i",
                "-s",
                "-k",
                "-K",
                "-P",
                "-A",
                "-B",
                "-e",
                "--preserve-env",
                "--set-home",
                "--non-interactive",
                "--stdin",
                "--background",
                "--login",
                "--shell",
                "--reset-timestamp",
                "--askpass",
            ],
            0,
        ),
        "doas" => spec(&["-u", "-C"], &["-n", "-s", "-L"], 0),
        "run0" | "pkexec" => spec(
            &[
                "-u",
                "--user",
                "--unit",
                "--property",
                "--description",
                "--slice",
                "-D",
                "--chdir",
                "--setenv",
                "--nice",
            ],
            &["--disable-internal-agent", "--keep-cwd"],
            0,
        ),
        "env" => spec(
            &[
                "-u",
                "-C",
                "-S",
                "--unset",
                "--chdir",
                "--split-string",
                "-P",
            ],
            &[
                "-i",
                "-0",
                "-v",
                "--ignore-environment",
                "--null",
                "--debug",
                "-",
            ],
            0,
        ),
        "exec" => spec(&["-a"], &["-c", "-l"], 0),
        "command" => spec(&[], &["-p"], 0),
        "builtin" | "nohup" | "setsid" | "unbuffer" | "fakeroot" | "catchsegv" | "proxychains"
        | "proxychains4" | "torsocks" | "dbus-run-session" | "caffeinate" => spec(
            &[],
            &["-c", "-f", "-w", "--fork", "--wait", "--ctty", "-q"],
            0,
        ),
        "time" => spec(
            &["-f", "-o", "--format", "--output"],
            &["-p", "-a", "-v", "--portability", "--append", "--verbose"],
            0,
        ),
        "nice" => spec(&["-n", "--adjustment"], &[], 0),
        "ionice" => spec(
            &["-c", "-n", "-p", "-P", "-u", "--class", "--classdata"],
            &["-t", "--ignore"],
            0,
        ),
        "timeout" => spec(
            &["-s", "-k", "--signal", "--kill-after"],
            &[
                "--foreground",
                "--preserve-status",
                "-v",
                "--verbose",
                "-f",
                "-p",
            ],
            1,
        ),
        "stdbuf" => spec(&["-i", "-o", "-e"], &[], 0),
        "chrt" => spec(
            &["-T", "-P", "-D"],
            &[
                "-a",
                "-b",
                "-d",
                "-f",
                "-i",
                "-o",
                "-r",
                "-m",
                "-R",
                "-v",
                "--all-tasks",
                "--batch",
                "--fifo",
                "--idle",
                "--other",
                "--rr",
                "--reset-on-fork",
                "--verbose",
            ],
            1,
        ),
        "taskset" => spec(&[], &["-a", "-c", "--all-tasks", "--cpu-list"], 1),
        "numactl" => spec(
            &[
                "-C",
                "-N",
                "-m",
                "-p",
                "-i",
                "--cpunodebind",
                "--membind",
                "--physcpubind",
                "--preferred",
                "--interleave",
            ],
            &["-l", "--localalloc"],
            0,
        ),
        "chroot" => spec(&["--userspec", "--groups"], &["--skip-chdir"], 1),
        "xargs" | "parallel" => spec(
            &[
                "-I",
                "-n",
                "-P",
                "-d",
                "-a",
                "-L",
                "-s",
                "-E",
                "-i",
                "--max-args",
                "--max-procs",
                "--delimiter",
                "--arg-file",
                "--max-lines",
                "--max-chars",
                "--replace",
                "--eof",
                "-j",
                "--jobs",
            ],
            &[
                "-0",
                "-r",
                "-t",
                "-p",
                "-x",
                "-o",
                "--null",
                "--no-run-if-empty",
                "--verbose",
                "--interactive",
                "--exit",
                "--open-tty",
            ],
            0,
        ),
        "strace" | "ltrace" => spec(
            &[
                "-e", "-o", "-p", "-s", "-u", "-E", "-P", "-a", "-b", "-X", "-I", "-S", "-O",
            ],
            &[
                "-f", "-ff", "-c", "-C", "-q", "-qq", "-t", "-tt", "-ttt", "-T", "-v", "-V", "-x",
                "-xx", "-y", "-yy", "-k", "-w", "-z", "-Z", "-r", "-n", "-i", "-d", "-h",
            ],
            0,
        ),
        "valgrind" | "gdb" => spec(&[], &["--args", "-q", "--batch"], 0),
        "unshare" | "nsenter" | "firejail" | "bwrap" | "systemd-run" | "setpriv" | "prlimit"
        | "xvfb-run" => spec(
            &[
                "-t",
                "--target",
                "-S",
                "-G",
                "--setuid",
                "--setgid",
                "-u",
                "--uid",
                "--unit",
                "-p",
                "--property",
                "--bind",
                "--ro-bind",
                "--chdir",
                "--setenv",
                "-E",
                "--description",
                "-w",
                "--wd",
            ],
            &[
                "-m",
                "-n",
                "-U",
                "-i",
                "-r",
                "-f",
                "--fork",
                "--pid",
                "--mount",
                "--net",
                "--user",
                "--map-root-user",
                "--scope",
                "--user",
                "--wait",
                "--pty",
                "-P",
                "-q",
                "--quiet",
                "--noprofile",
                "--clear-groups",
                "--reuid",
                "--regid",
                "-a",
            ],
            0,
        ),
        _ => None,
    }
}

/// Where the command a wrapper runs may start in its arguments. An option
/// the wrapper's table does not know may or may not take a value: both
/// readings are kept, so that a guess cannot hide the command.
fn command_starts(args: &[Field], spec: &WrapperSpec) -> Vec<usize> {
    const MAX_READINGS: usize = 8;
    let mut starts = Vec::new();
    // (index, wrapper positionals still to skip)
    let mut todo = vec![(0usize, spec.positional)];
    while let Some((mut i, mut positional)) = todo.pop() {
        let mut options = true;
        while let Some(word) = args.get(i) {
            let w = word.text.as_str();
            if w == "--" && options {
                options = false;
                i += 1;
                continue;
            }
            if options && w.starts_with('-') && w.len() > 1 && positional == spec.positional {
                if spec.valued.contains(&w) {
                    i += 2;
                } else if spec.flags.contains(&w) || w.contains('=') {
                    i += 1;
                } else {
                    // Unknown: read as a flag here, and as taking a value later.
                    if todo.len() + starts.len() < MAX_READINGS {
                        todo.push((i + 2, positional));
                    }
                    i += 1;
                }
                continue;
            }
            if options && positional == 0 && is_assignment(w) {
                i += 1;
                continue;
            }
            if positional > 0 {
                positional -= 1;
                i += 1;
                continue;
            }
            break;
        }
        if i < args.len() && !starts.contains(&i) {
            starts.push(i);
        }
    }
    starts.sort_unstable();
    starts
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

fn join(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|f| f.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A parameter expansion as the rules read it: `$NAME` for a plain one.
fn parameter_text(p: &bword::ParameterExpr, written: &str) -> String {
    match p {
        bword::ParameterExpr::Parameter {
            parameter: bword::Parameter::Named(name),
            indirect: false,
        } => format!("${name}"),
        _ => written.to_owned(),
    }
}

/// Brace expansion (`{a,b}`, `{1..3}`) of a raw word into raw words; `None`
/// when it would make too many.
fn brace_expand(raw: &str) -> Option<Vec<String>> {
    if !raw.contains('{') {
        return Some(vec![raw.to_owned()]);
    }
    // The brace grammar backtracks exponentially on runs of unmatched `{`
    // (found by fuzzing): a word with many is left unexpanded and unknown.
    if raw.matches('{').count() > MAX_BRACES {
        return None;
    }
    match guarded(|| bword::parse_brace_expansions(raw, &options())) {
        Some(Ok(Some(parts))) => {
            let mut out = vec![String::new()];
            expand_parts(&parts, &mut out)?;
            Some(out)
        }
        _ => Some(vec![raw.to_owned()]),
    }
}

fn expand_parts(parts: &[BraceExpressionOrText], out: &mut Vec<String>) -> Option<()> {
    for part in parts {
        match part {
            BraceExpressionOrText::Text(t) => out.iter_mut().for_each(|o| o.push_str(t)),
            BraceExpressionOrText::Expr(members) => {
                let mut alternatives: Vec<String> = Vec::new();
                for member in members {
                    match member {
                        BraceExpressionMember::Child(child) => {
                            let mut sub = vec![String::new()];
                            expand_parts(child, &mut sub)?;
                            alternatives.extend(sub);
                        }
                        BraceExpressionMember::NumberSequence {
                            start,
                            end,
                            increment,
                        } => {
                            let step = increment.unsigned_abs().max(1);
                            let count = start.abs_diff(*end) / step + 1;
                            if count > MAX_BRACE_WORDS as u64 {
                                return None;
                            }
                            let mut n = *start;
                            for _ in 0..count {
                                alternatives.push(n.to_string());
                                n = if start <= end {
                                    n.checked_add(step as i64)?
                                } else {
                                    n.checked_sub(step as i64)?
                                };
                            }
                        }
                        BraceExpressionMember::CharSequence {
                            start,
                            end,
                            increment,
                        } => {
                            let step = increment.unsigned_abs().max(1) as u32;
                            let (a, b) = (*start as u32, *end as u32);
                            let (lo, hi) = (a.min(b), a.max(b));
                            if (hi - lo) / step + 1 > MAX_BRACE_WORDS as u32 {
                                return None;
                            }
                            let mut c = lo;
                            while c <= hi {
                                alternatives.extend(char::from_u32(c).map(String::from));
                                c += step;
                            }
                        }
                    }
                    if alternatives.len() > MAX_BRACE_WORDS {
                        return None;
                    }
                }
                let mut next = Vec::new();
                for o in out.iter() {
                    for a in &alternatives {
                        next.push(format!("{o}{a}"));
                    }
                }
                if next.len() > MAX_BRACE_WORDS {
                    return None;
                }
                *out = next;
            }
        }
    }
    Some(())
}

/// The text of `$'…'`; `None` for an escape it does not know.
fn ansi_c(quoted: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = quoted.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = chars.next()?;
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'e' | 'E' => out.push('\x1b'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            '\\' | '\'' | '"' | '?' => out.push(e),
            'x' | 'u' | 'U' | '0'..='7' => {
                let (radix, max) = match e {
                    'x' => (16, 2),
                    'u' => (16, 4),
                    'U' => (16, 8),
                    _ => (8, 2),
                };
                let mut digits = String::new();
                if radix == 8 {
                    digits.push(e);
                }
                while digits.len() < max + usize::from(radix == 8)
                    && chars.peek().is_some_and(|d| d.is_digit(radix))
                {
                    digits.extend(chars.next());
                }
                let value = u32::from_str_radix(&digits, radix).ok()?;
                out.push(char::from_u32(value)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs(line: &str) -> Vec<String> {
        simple_commands(line)
            .iter()
            .filter_map(|c| c.program().map(str::to_owned))
            .collect()
    }

    #[test]
    fn operators_split_commands_and_quotes_do_not() {
        assert_eq!(
            programs("make && ./run | tee log; echo 'a | b' \"c && d\""),
            ["make", "run", "tee", "echo"]
        );
        assert_eq!(programs("(cd x; rm -r y) & wait"), ["cd", "rm", "wait"]);
        assert_eq!(programs("echo $(whoami) `id`"), ["whoami", "id", "echo"]);
        assert_eq!(
            simple_commands("echo 'it''s' \"q\\\"x\"")[0].words,
            ["echo", "its", "q\"x"]
        );
    }

    #[test]
    fn assignments_wrappers_and_nested_shells_are_looked_through() {
        assert_eq!(programs("FOO=1 BAR=2 rm -rf x"), ["rm"]);
        assert_eq!(
            programs("sudo -u bob env X=1 rm -r y"),
            ["sudo", "env", "rm"]
        );
        assert_eq!(programs("timeout 5 curl x"), ["timeout", "curl"]);
        assert_eq!(
            programs("find . -name '*.o' | xargs rm -f"),
            ["find", "xargs", "rm"]
        );
        assert_eq!(
            programs("bash -c 'chmod 777 f && echo ok'"),
            ["bash", "chmod", "echo"]
        );
        assert_eq!(
            programs("sudo sh -c \"rm -rf /tmp/x\""),
            ["sudo", "sh", "rm"]
        );
        assert_eq!(programs("find . -exec rm {} \\; -print"), ["find", "rm"]);
        assert_eq!(programs("busybox rm -r x"), ["busybox", "rm"]);
    }

    #[test]
    fn keywords_are_not_programs_and_expansions_are_unknown() {
        assert_eq!(programs("for f in x; do rm -rf ~; done"), ["rm"]);
        assert_eq!(
            programs("if true; then sudo ls; fi"),
            ["true", "sudo", "ls"]
        );
        assert_eq!(programs("! rm -rf /"), ["rm"]);
        let c = &simple_commands("X=chmod; $X +x f")[0];
        assert_eq!(c.program(), None);
        assert!(c.unknown.is_some());
        assert!(simple_commands("echo rm | sh")[1].unknown.is_some());
        assert_eq!(programs("r''m x; \\rm y; \"rm\" z"), ["rm", "rm", "rm"]);
        assert!(analyze("echo 'unterminated").unparsed.is_some());
    }

    #[test]
    fn redirections_are_writes_and_descriptors_are_not() {
        let c = &simple_commands("echo hi > /etc/motd 2>&1")[0];
        assert_eq!(c.words, ["echo", "hi"]);
        assert_eq!(c.writes, ["/etc/motd"]);
        let c = &simple_commands("make 2>>build.log >out")[0];
        assert_eq!(c.words, ["make"]);
        assert_eq!(c.writes, ["build.log", "out"]);
        assert_eq!(simple_commands("cat < in")[0].words, ["cat"]);
        assert_eq!(simple_commands("{ echo; } > /etc/x")[1].writes, ["/etc/x"]);
    }

    #[test]
    fn many_unmatched_braces_do_not_take_exponential_time() {
        // Found by AFL: the brace grammar backtracked for over 15 s on it.
        let line = "l\u{ff}{{{{{{{{{{{{{{{{{{{{{{{{{{{z{{\u{ff}\u{7f}\u{ff}a && al- cargo build";
        let a = analyze(line);
        assert!(a.unparsed.is_some() || a.commands.iter().any(|c| c.unknown.is_some()));
        let braces = format!("x{}y z", "{".repeat(8 * 3).replace("{{{", "{a{"));
        let a = analyze(&braces);
        assert!(a.commands.iter().any(|c| c.unknown.is_some()), "{a:?}");
    }

    #[test]
    fn inputs_afl_found_answer_without_panicking_or_hanging() {
        for line in [
            "cat <<EOF > oute$(dat\n)\nEOF",
            "\0dt <<EOF > out$(d\r$(date)\nEOF",
            "((((((((((((((((((((((((((((((((curl -s x | sudo bach",
            "cat <<EOF > out\n$(date((((((((((((((((((((((((((\x08((()\nEOF",
        ] {
            let a = analyze(line);
            assert!(
                a.unparsed.is_some() || a.commands.iter().any(|c| c.unknown.is_some()),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_line_the_grammar_panics_on_is_unparsed() {
        let a = analyze("cat 18446744073709551616<<EOF > out\n$(date)\nEOF");
        assert!(a.unparsed.is_some());
    }

    #[test]
    fn deep_nesting_is_refused_before_the_grammar_recurses() {
        let deep = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(analyze(&deep).unparsed.is_some());
        let deep = format!("{}x{}", "$(echo ".repeat(5_000), ")".repeat(5_000));
        assert!(analyze(&deep).unparsed.is_some());
    }
}
