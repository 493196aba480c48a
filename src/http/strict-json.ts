/**
 * Checks on control-plane JSON that JSON.parse does not make: it keeps the
 * last of duplicate keys silently (refuse rather than guess), accepts keys
 * that name object internals (`__proto__`, `constructor`, `prototype`), and
 * any nesting depth. Written by hand because the JSON parsers on npm that
 * detect duplicate keys are unmaintained; it only scans text that
 * JSON.parse has already accepted, so it need not validate.
 */

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** What is wrong with (valid) JSON text, or undefined. */
export function jsonProblem(text: string, maxDepth: number): string | undefined {
  /** One frame per open container: the keys seen for an object, null for an array. */
  const stack: (Set<string> | null)[] = [];
  let expectingKey = false;
  for (let i = 0; i < text.length; i++) {
    switch (text[i]) {
      case '{':
        stack.push(new Set());
        if (stack.length > maxDepth) return `it is nested more than ${maxDepth} levels deep`;
        expectingKey = true;
        break;
      case '[':
        stack.push(null);
        if (stack.length > maxDepth) return `it is nested more than ${maxDepth} levels deep`;
        expectingKey = false;
        break;
      case '}':
      case ']':
        stack.pop();
        expectingKey = false;
        break;
      case ',':
        expectingKey = stack.length > 0 && stack[stack.length - 1] !== null;
        break;
      case '"': {
        let end = i + 1;
        while (end < text.length && text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
        if (expectingKey) {
          const key = JSON.parse(text.slice(i, end + 1)) as string;
          const keys = stack[stack.length - 1]!;
          if (FORBIDDEN_KEYS.has(key)) return `the key ${JSON.stringify(key)} is not allowed`;
          if (keys.has(key)) return `the key ${JSON.stringify(key)} appears twice in one object`;
          keys.add(key);
          expectingKey = false;
        }
        i = end;
        break;
      }
    }
  }
  return undefined;
}
