/**
 * `capi` profiles in `~/.capability/`, the original CLI's layout:
 *
 *   credentials   one YAML document per profile:
 *                   profile: default
 *                   membrane:
 *                     capabilities: { create: cpblty://…, query: …, deleteSelf: … }
 *   config        one YAML document per profile:
 *                   profile: default
 *                   membrane: { address: http://localhost:8080, ca: /path/to/ca.pem }
 *
 * Both files are created mode 0600 in a 0700 directory. Every change is a
 * read-modify-write under a lock (proper-lockfile), replacing the file
 * atomically, so concurrent writers never lose each other's profiles and a
 * reader never sees half a file. Fields this version does not know are kept.
 */
import { mkdirSync, readFileSync, renameSync, unlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { parseAllDocuments, stringify } from 'yaml';
import { syncDirectory, writeTemporary } from '../durable-file.js';

export type ProfileDocument = { profile: string } & Record<string, unknown>;

export interface MembraneCredentials {
  create?: string;
  query?: string;
  deleteSelf?: string;
}

export interface MembraneSettings {
  /** Base URL of the service; default https://AUTHORITY of the capability used. */
  address?: string;
  /** Path of a PEM file of certificate authorities to trust. */
  ca?: string;
}

/** A change to a profile's settings: a string sets the setting, null removes it, undefined keeps it. */
export type SettingsChange = { [Name in keyof MembraneSettings]?: string | null };

export class ProfileFileError extends Error {
  readonly code = 'CAPI_PROFILE_FILE';
}

export class ProfileStore {
  readonly dir: string;

  constructor(dir = join(homedir(), '.capability')) {
    this.dir = dir;
  }

  get credentialsPath(): string {
    return join(this.dir, 'credentials');
  }

  get configPath(): string {
    return join(this.dir, 'config');
  }

  async credentials(profile: string): Promise<MembraneCredentials> {
    const membrane = (this.#read(this.credentialsPath).get(profile)?.membrane ?? {}) as Record<string, unknown>;
    // The original CLI wrote membrane.capabilities; its documentation showed them directly under membrane.
    const capabilities = (membrane.capabilities ?? membrane) as Record<string, unknown>;
    const pick = (name: string): string | undefined => (typeof capabilities[name] === 'string' ? (capabilities[name] as string) : undefined);
    return { create: pick('create'), query: pick('query'), deleteSelf: pick('deleteSelf') };
  }

  async settings(profile: string): Promise<MembraneSettings> {
    const membrane = (this.#read(this.configPath).get(profile)?.membrane ?? {}) as Record<string, unknown>;
    return {
      address: typeof membrane.address === 'string' ? membrane.address : undefined,
      ca: typeof membrane.ca === 'string' ? membrane.ca : undefined,
    };
  }

  async profiles(): Promise<string[]> {
    const names = new Set([...this.#read(this.configPath).keys(), ...this.#read(this.credentialsPath).keys()]);
    return [...names].sort();
  }

  /** Sets the given capabilities of a profile (others kept). */
  async setCredentials(profile: string, capabilities: MembraneCredentials): Promise<void> {
    await this.#update(this.credentialsPath, (documents) => {
      const document = documents.get(profile) ?? { profile };
      const membrane = { ...((document.membrane ?? {}) as Record<string, unknown>) };
      const current = { ...((membrane.capabilities ?? {}) as Record<string, unknown>) };
      for (const [name, value] of Object.entries(capabilities)) if (value !== undefined) current[name] = value;
      delete membrane.create;
      delete membrane.query;
      delete membrane.deleteSelf;
      documents.set(profile, { ...document, membrane: { ...membrane, capabilities: current } });
    });
  }

  /** Sets or removes the given settings of a profile (others kept). */
  async setSettings(profile: string, settings: SettingsChange): Promise<void> {
    await this.#update(this.configPath, (documents) => {
      const document = documents.get(profile) ?? { profile };
      const membrane = { ...((document.membrane ?? {}) as Record<string, unknown>) };
      for (const [name, value] of Object.entries(settings)) {
        if (value === null) delete membrane[name];
        else if (value !== undefined) membrane[name] = value;
      }
      documents.set(profile, { ...document, membrane });
    });
  }

  /** Renames a profile in both files (the new name must be free). */
  async renameProfile(from: string, to: string): Promise<void> {
    for (const path of [this.credentialsPath, this.configPath]) {
      await this.#update(path, (documents) => {
        const document = documents.get(from);
        if (document === undefined) return;
        if (documents.has(to)) throw new ProfileFileError(`profile ${to} already exists in ${path}`);
        documents.delete(from);
        documents.set(to, { ...document, profile: to });
      });
    }
  }

  #read(path: string): Map<string, ProfileDocument> {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
      throw new ProfileFileError(`cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    const documents = new Map<string, ProfileDocument>();
    for (const [index, document] of parseAllDocuments(text).entries()) {
      if (document.errors.length > 0) throw new ProfileFileError(`${path} is not valid YAML (document ${index + 1})`);
      const value = document.toJS() as unknown;
      if (value === null || value === undefined) continue;
      if (typeof value !== 'object' || Array.isArray(value) || typeof (value as { profile?: unknown }).profile !== 'string') {
        throw new ProfileFileError(`${path}: document ${index + 1} has no profile name`);
      }
      documents.set((value as ProfileDocument).profile, value as ProfileDocument);
    }
    return documents;
  }

  async #update(path: string, change: (documents: Map<string, ProfileDocument>) => void): Promise<void> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const release = await lockfile.lock(path, {
      realpath: false,
      stale: 10_000,
      retries: { retries: 100, minTimeout: 10, maxTimeout: 200, randomize: true },
    });
    try {
      const documents = this.#read(path);
      change(documents);
      const text = [...documents.values()].map((document) => stringify(document)).join('---\n');
      const temporary = writeTemporary(path, text);
      try {
        renameSync(temporary, path);
      } catch (error) {
        unlinkSync(temporary);
        throw error;
      }
      syncDirectory(this.dir);
    } finally {
      await release();
    }
  }
}
