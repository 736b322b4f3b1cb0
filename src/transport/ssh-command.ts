import { UsageError } from "../util/errors.js";

/** The environment variable naming the OpenSSH client and its arguments (as git's GIT_SSH_COMMAND). */
export const SSH_COMMAND_ENV = "BITFERRY_SSH_COMMAND";

export class SshCommandError extends UsageError {}

/**
 * Splits a command line into words as a POSIX shell would, without expansions: blanks separate words, single
 * quotes keep everything, double quotes keep everything but `\"`, `\\`, `\$` and `` \` ``, a backslash outside
 * quotes keeps the next character. `ssh -F "/etc/my ssh/config" -i ~/.ssh/k` splits as a user expects
 * (but `~` stays `~`: ssh itself expands it in -i and -F).
 */
export function splitCommandLine(text: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let i = 0;
  while (i < text.length) {
    const c = text.charAt(i);
    if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) throw new SshCommandError(`${SSH_COMMAND_ENV}: unterminated single quote in '${text}'`);
      word += text.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i++;
      for (;;) {
        if (i >= text.length)
          throw new SshCommandError(`${SSH_COMMAND_ENV}: unterminated double quote in '${text}'`);
        const d = text.charAt(i);
        if (d === '"') break;
        if (d === "\\" && i + 1 < text.length && '"\\$`'.includes(text.charAt(i + 1))) {
          word += text.charAt(i + 1);
          i += 2;
        } else {
          word += d;
          i++;
        }
      }
      inWord = true;
      i++;
    } else if (c === "\\") {
      if (i + 1 < text.length && text.charAt(i + 1) !== "\n") word += text.charAt(i + 1);
      inWord = true;
      i += 2;
    } else if (c === " " || c === "\t" || c === "\n") {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
      i++;
    } else {
      word += c;
      inWord = true;
      i++;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/** The client command: `$BITFERRY_SSH_COMMAND` split into words, or plain `ssh`. */
export function sshCommand(env: NodeJS.ProcessEnv = process.env): string[] {
  const text = env[SSH_COMMAND_ENV];
  if (text === undefined || text.trim() === "") return ["ssh"];
  const words = splitCommandLine(text);
  if (words.length === 0) return ["ssh"];
  return words;
}

/** Quotes one word for a POSIX shell (the remote login shell reads the command ssh sends). */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
