//! Just enough shell parsing to see what a command line runs: its simple
//! commands (split at `|`, `&&`, `;`, subshells…), each command's words with
//! quotes removed, and where its output is redirected.
//!
//! This is for a policy that asks before risky actions, not a sandbox: it
//! understands quoting, `VAR=value` prefixes, wrappers such as `sudo` or
//! `env`, and nested `sh -c '…'`, and it errs towards seeing more commands.

/// One simple command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleCommand {
    /// The words, quotes removed, assignments dropped.
    pub words: Vec<String>,
    /// Targets of `>` and `>>` redirections.
    pub writes: Vec<String>,
    /// The command as written.
    pub text: String,
}

impl SimpleCommand {
    /// The program's name without its directory.
    pub fn program(&self) -> Option<&str> {
        let first = self.words.first()?;
        Some(first.rsplit('/').next().unwrap_or(first))
    }

    pub fn args(&self) -> &[String] {
        self.words.get(1..).unwrap_or(&[])
    }
}

/// Programs that run the rest of their arguments as another command.
const WRAPPERS: &[&str] = &[
    "sudo", "doas", "env", "exec", "nohup", "time", "nice", "ionice", "timeout", "xargs",
    "command", "builtin", "stdbuf", "setsid", "chrt", "unbuffer",
];

/// Splits a command line into simple commands, looking into wrappers and `sh -c`.
pub fn simple_commands(line: &str) -> Vec<SimpleCommand> {
    let mut out = Vec::new();
    collect(line, &mut out, 0);
    out
}

fn collect(line: &str, out: &mut Vec<SimpleCommand>, depth: usize) {
    for segment in segments(line) {
        let mut command = segment;
        // `VAR=value cmd`: the assignments are not the program.
        while command.words.first().is_some_and(|w| is_assignment(w)) {
            command.words.remove(0);
        }
        if command.words.is_empty() && command.writes.is_empty() {
            continue;
        }
        let nested = nested_command(&command);
        let inner = unwrap(&command);
        out.push(command);
        if let Some(inner) = inner {
            out.push(inner);
        }
        if let Some(script) = nested
            && depth < 4
        {
            collect(&script, out, depth + 1);
        }
    }
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// Wrapper options that take a value in the next word.
fn option_takes_value(wrapper: &str, option: &str) -> bool {
    let options: &[&str] = match wrapper {
        "sudo" => &[
            "-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "--user", "--group",
            "--chdir",
        ],
        "doas" => &["-u", "-C"],
        "env" => &["-u", "-C", "-S", "--unset", "--chdir", "--split-string"],
        "timeout" => &["-s", "-k", "--signal", "--kill-after"],
        "nice" => &["-n", "--adjustment"],
        "ionice" => &["-c", "-n", "-p", "-P", "-u", "--class", "--classdata"],
        "xargs" => &[
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
        ],
        "stdbuf" => &["-i", "-o", "-e"],
        "chrt" => &["-p"],
        _ => &[],
    };
    options.contains(&option)
}

/// The command a wrapper runs (`sudo -u x rm -r y` → `rm -r y`).
fn unwrap(command: &SimpleCommand) -> Option<SimpleCommand> {
    let program = command.program()?;
    if !WRAPPERS.contains(&program) {
        return None;
    }
    let words = &command.words[1..];
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        if word == "--" {
            i += 1;
            break;
        }
        if word.starts_with('-') {
            i += if option_takes_value(program, word) {
                2
            } else {
                1
            };
        } else if is_assignment(word) {
            i += 1;
        } else {
            break;
        }
    }
    // `timeout 5 cmd`, `chrt 10 cmd`: a leading duration or number is the wrapper's own.
    if matches!(program, "timeout" | "chrt")
        && words
            .get(i)
            .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit() || ".smhd".contains(c)))
    {
        i += 1;
    }
    let words: Vec<String> = words.get(i..)?.to_vec();
    if words.is_empty() {
        return None;
    }
    let inner = SimpleCommand {
        words,
        writes: Vec::new(),
        text: command.text.clone(),
    };
    // Wrappers nest: `sudo env X=1 rm -r y`.
    Some(unwrap(&inner).unwrap_or(inner))
}

/// The script of `sh -c '…'` (and bash, zsh, dash).
fn nested_command(command: &SimpleCommand) -> Option<String> {
    let mut current = command.clone();
    while let Some(inner) = unwrap(&current) {
        current = inner;
    }
    let program = current.program()?;
    if !matches!(program, "sh" | "bash" | "zsh" | "dash" | "ksh") {
        return None;
    }
    let mut args = current.args().iter();
    while let Some(arg) = args.next() {
        if arg.starts_with('-') && arg.contains('c') && !arg.starts_with("--") {
            return args.next().cloned();
        }
    }
    None
}

/// Splits at control operators, tracking quotes; `$(`, backquotes and
/// parentheses also split, so commands inside them are seen.
fn segments(line: &str) -> Vec<SimpleCommand> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut writes = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut redirect = false;
    let mut start = 0;
    let mut i = 0;
    let finish_word = |word: &mut String,
                       in_word: &mut bool,
                       words: &mut Vec<String>,
                       writes: &mut Vec<String>,
                       redirect: &mut bool| {
        if *in_word {
            if *redirect {
                writes.push(std::mem::take(word));
                *redirect = false;
            } else {
                words.push(std::mem::take(word));
            }
            *in_word = false;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() => {
                word.push(chars[i + 1]);
                in_word = true;
                i += 2;
                continue;
            }
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\'
                        && i + 1 < chars.len()
                        && matches!(chars[i + 1], '"' | '\\' | '$' | '`')
                    {
                        i += 1;
                    }
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '>' => {
                // `2>file`, `2>&1`: a number glued to `>` is a file descriptor, not a word.
                if in_word && !word.is_empty() && word.chars().all(|c| c.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                }
                finish_word(
                    &mut word,
                    &mut in_word,
                    &mut words,
                    &mut writes,
                    &mut redirect,
                );
                // `2>&1`, `>&2`: duplications, not files.
                if chars.get(i + 1) == Some(&'&') {
                    i += 2;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                    continue;
                }
                if chars.get(i + 1) == Some(&'>') {
                    i += 1;
                }
                redirect = true;
            }
            '<' => {
                finish_word(
                    &mut word,
                    &mut in_word,
                    &mut words,
                    &mut writes,
                    &mut redirect,
                );
            }
            '|' | '&' | ';' | '\n' | '(' | ')' | '`' | '{' | '}' => {
                finish_word(
                    &mut word,
                    &mut in_word,
                    &mut words,
                    &mut writes,
                    &mut redirect,
                );
                let text: String = chars[start..i].iter().collect();
                out.push(SimpleCommand {
                    words: std::mem::take(&mut words),
                    writes: std::mem::take(&mut writes),
                    text: text.trim().to_owned(),
                });
                start = i + 1;
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                finish_word(
                    &mut word,
                    &mut in_word,
                    &mut words,
                    &mut writes,
                    &mut redirect,
                );
                let text: String = chars[start..i].iter().collect();
                out.push(SimpleCommand {
                    words: std::mem::take(&mut words),
                    writes: std::mem::take(&mut writes),
                    text: text.trim().to_owned(),
                });
                i += 2;
                start = i;
                continue;
            }
            c if c.is_whitespace() => finish_word(
                &mut word,
                &mut in_word,
                &mut words,
                &mut writes,
                &mut redirect,
            ),
            c => {
                word.push(c);
                in_word = true;
            }
        }
        i += 1;
    }
    finish_word(
        &mut word,
        &mut in_word,
        &mut words,
        &mut writes,
        &mut redirect,
    );
    let text: String = chars[start.min(chars.len())..].iter().collect();
    out.push(SimpleCommand {
        words,
        writes,
        text: text.trim().to_owned(),
    });
    out.retain(|c| !c.words.is_empty() || !c.writes.is_empty());
    out
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
        assert_eq!(programs("echo $(whoami) `id`"), ["echo", "whoami", "id"]);
        assert_eq!(
            simple_commands("echo 'it''s' \"q\\\"x\"")[0].words,
            ["echo", "its", "q\"x"]
        );
    }

    #[test]
    fn assignments_wrappers_and_nested_shells_are_looked_through() {
        assert_eq!(programs("FOO=1 BAR=2 rm -rf x"), ["rm"]);
        assert_eq!(programs("sudo -u bob env X=1 rm -r y"), ["sudo", "rm"]);
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
    }

    #[test]
    fn redirections_are_writes_and_descriptors_are_not() {
        let c = &simple_commands("echo hi > /etc/motd 2>&1")[0];
        assert_eq!(c.words, ["echo", "hi"]);
        assert_eq!(c.writes, ["/etc/motd"]);
        let c = &simple_commands("make 2>>build.log >out")[0];
        assert_eq!(c.words, ["make"]);
        assert_eq!(c.writes, ["build.log", "out"]);
        assert_eq!(simple_commands("cat < in")[0].words, ["cat", "in"]);
    }
}
