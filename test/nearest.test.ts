/** "Did you mean …?": the nearest valid word to a mistyped one. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { didYouMean, editDistance, nearest } from '../src/cli/nearest.js';

test('edit distance counts insertions, deletions, substitutions and swapped neighbours as one step each', () => {
  assert.equal(editDistance('serve', 'serve'), 0);
  assert.equal(editDistance('srve', 'serve'), 1);
  assert.equal(editDistance('prot', 'port'), 1);
  assert.equal(editDistance('invok', 'invoke'), 1);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('kitten', 'sitting'), 3);
});

test('the nearest candidate is offered only when it is near enough to be what was meant', () => {
  const commands = ['serve', 'init', 'tenant', 'audit-hash', 'keys'];
  assert.equal(nearest('srve', commands), 'serve');
  assert.equal(nearest('SERV', commands), 'serve');
  assert.equal(nearest('audithash', commands), 'audit-hash');
  assert.equal(nearest('key', commands), 'keys');
  assert.equal(nearest('frobnicate', commands), undefined);
  assert.equal(nearest('', commands), undefined);
  assert.equal(nearest('allow', ['allow-targets', 'admin-port']), 'allow-targets');
});

test('didYouMean phrases the suggestion, or says nothing', () => {
  assert.equal(didYouMean('exprot', ['export', 'query']), '; did you mean "export"?');
  assert.equal(didYouMean('prot', ['port'], (flag) => `--${flag}`), '; did you mean --port?');
  assert.equal(didYouMean('zzzzzz', ['export']), '');
});
