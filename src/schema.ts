/**
 * JSON Schema validation (Ajv) with one-line messages that name the
 * offending field, e.g. `config.tls.rejectUnauthorized must be a boolean`.
 * Messages never include the offending value, only field names, because
 * values may be secrets. A schema may give a field a `description`; it is
 * used as the "must be …" text for pattern, enum and format failures.
 */
import { Ajv, type ErrorObject, type SchemaObject } from 'ajv';

const ajv = new Ajv({ allErrors: false, verbose: true, strict: true, allowUnionTypes: true });

export type Validation<T> = { ok: true; value: T } | { ok: false; message: string };

/** `name` overrides the root's name in messages (for example the flag or variable a value came from). */
export type Validator<T> = (value: unknown, name?: string) => Validation<T>;

export function compileValidator<T>(schema: SchemaObject, rootName: string): Validator<T> {
  const validate = ajv.compile(schema);
  return (value, name = rootName) => {
    if (validate(value)) return { ok: true, value: value as T };
    return { ok: false, message: describeError(validate.errors![0]!, name) };
  };
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  boolean: 'a boolean',
  integer: 'an integer',
  number: 'a number',
  object: 'an object',
  array: 'an array',
};

/** Renders a JSON Pointer as `root.a.b`, quoting segments that are not plain names. */
export function fieldPath(rootName: string, pointer: string): string {
  if (pointer === '') return rootName;
  return pointer
    .slice(1)
    .split('/')
    .map((segment) => segment.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((path, segment) => path + fieldSegment(segment), rootName);
}

export function fieldSegment(name: string): string {
  return /^[A-Za-z_$][\w$-]{0,63}$/.test(name) ? `.${name}` : `[${JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name)}]`;
}

function describeError(error: ErrorObject, rootName: string): string {
  const path = fieldPath(rootName, error.instancePath);
  const params = error.params as Record<string, unknown>;
  const description = (error.parentSchema as { description?: string } | undefined)?.description;
  if (error.propertyName !== undefined) {
    return `${path} has an invalid name${fieldSegment(error.propertyName)}: it must be ${description ?? 'valid'}`;
  }
  switch (error.keyword) {
    case 'additionalProperties':
      return `unknown field ${path}${fieldSegment(String(params.additionalProperty))}`;
    case 'required':
      return `missing field ${path}${fieldSegment(String(params.missingProperty))}`;
    case 'type':
      return `${path} must be ${TYPE_NAMES[String(params.type)] ?? String(params.type)}`;
    case 'minLength':
      return params.limit === 1 ? `${path} must not be empty` : `${path} must be at least ${params.limit} characters`;
    case 'maxLength':
      return `${path} must be at most ${params.limit} characters`;
    case 'minimum':
      return `${path} must be at least ${params.limit}`;
    case 'maximum':
      return `${path} must be at most ${params.limit}`;
    case 'exclusiveMinimum':
      return `${path} must be greater than ${params.limit}`;
    case 'maxProperties':
      return description !== undefined ? `${path} must be ${description}` : `${path} has more than ${params.limit} fields`;
    case 'minProperties':
      return description !== undefined ? `${path} must be ${description}` : `${path} must not be empty`;
    default:
      return `${path} must be ${description ?? `valid (${error.keyword})`}`;
  }
}
