// Unit tests of the admin page's pure parts (node's test runner; `jlpm test`).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { balanceCell, describeRights, hasReach, type UserRow } from '../src/admin';

const nobody = { everyone: false, groups: [], users: [] };

test('rights are described from their reach', () => {
  assert.equal(
    describeRights({ admin: { ...nobody, everyone: true }, grant: nobody }),
    'administers everyone'
  );
  assert.equal(
    describeRights({
      admin: nobody,
      grant: { everyone: false, groups: ['class-a'], users: ['eve'] }
    }),
    'grants coins to group class-a, eve'
  );
  assert.equal(hasReach(nobody), false);
});

test('the balance cell shows the pool state', () => {
  const row = (extra: Partial<UserRow>): UserRow => ({
    username: 'ada',
    state: 'limited',
    source: 'default',
    requests: 0,
    coins_used: { micro: 0, text: '0' },
    last_used_at: null,
    ...extra
  });
  const coins = (micro: number) => ({ micro, text: '' });
  assert.equal(
    balanceCell(row({ balance: coins(12_500_000), max: coins(20_000_000) })),
    '12.5 / 20'
  );
  assert.equal(
    balanceCell(row({ state: 'blocked', balance: coins(0), max: coins(0) })),
    '0 / 0 (blocked)'
  );
  assert.equal(balanceCell(row({ state: 'unlimited' })), 'Unlimited');
  assert.equal(balanceCell(row({ state: 'none' })), '—');
});
