// donatello.scan_pii against independent references: card numbers judged by
// the npm "luhn" package, IBANs by "ibantools" (its table of countries and
// lengths, and its checksum), IP addresses by Node's net.isIP. The inputs
// are pseudo-random (fixed seed), valid and invalid mixed.
import test from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import luhn from 'luhn';
import * as ibantools from 'ibantools';
import { connect } from './lib/generation_db.mjs';

// mulberry32: a small seeded generator, so every run checks the same inputs.
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The kinds scan_pii finds in each text.
async function kindsOf(db, texts) {
  const { rows } = await db.query(
    'SELECT t, donatello.scan_pii(t)->\'kinds\' AS kinds FROM unnest($1::text[]) WITH ORDINALITY u(t, i) ORDER BY i',
    [texts]);
  return rows.map((r) => r.kinds);
}

test('scan_pii finds exactly the card numbers the luhn package accepts', async () => {
  const rnd = random(42);
  const numbers = [];
  for (let i = 0; i < 400; i++) {
    const length = 13 + Math.floor(rnd() * 7);
    let digits = '';
    for (let k = 0; k < length; k++) digits += Math.floor(rnd() * 10);
    if (i % 2 === 0) {
      // make it valid: the check digit luhn accepts
      const body = digits.slice(0, -1);
      digits = [...'0123456789'].map((d) => body + d).find((d) => luhn.validate(d));
    }
    if (/^(.)\1*$/.test(digits)) continue; // one repeated digit is never reported
    numbers.push(digits);
  }
  const grouped = numbers.map((d) => d.replace(/(\d{4})(?=\d)/g, '$1 '));
  const db = await connect('safety_reference');
  try {
    const plain = await kindsOf(db, numbers.map((d) => `pay with card ${d} today`));
    const spaced = await kindsOf(db, grouped.map((d) => `pay with card ${d} today`));
    let valid = 0;
    numbers.forEach((d, i) => {
      const expected = luhn.validate(d);
      valid += expected;
      assert.equal(plain[i].includes('credit_card'), expected, `card ${d}`);
      // grouped, a card may be followed by more groups (an expiry year): any
      // run of whole groups of 13 to 19 digits that luhn accepts counts
      const groups = grouped[i].split(' ');
      const prefixes = groups.map((_, k) => groups.slice(0, k + 1).join(''));
      const expectedGrouped = prefixes.some((p) => p.length >= 13 && p.length <= 19 && luhn.validate(p));
      assert.equal(spaced[i].includes('credit_card'), expectedGrouped, `card ${grouped[i]}`);
    });
    assert.ok(valid > 150 && valid < numbers.length - 150, `a mix of valid (${valid}) and invalid numbers`);
  } finally {
    await db.end();
  }
});

// An IBAN of a country: a random BBAN in the format ibantools gives for the
// country (segments such as [A-Z]{4}[0-9]{14}), and correct check digits.
function ibanFor(country, spec, rnd) {
  const letters = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
  let bban = '';
  for (const [, cls, count] of spec.bban_regexp.matchAll(/\[([^\]]+)\]\{(\d+)\}/g)) {
    const alphabet = (cls.includes('0-9') ? '0123456789' : '') + (cls.includes('A-Z') ? letters : '');
    for (let k = 0; k < Number(count); k++) bban += alphabet[Math.floor(rnd() * alphabet.length)];
  }
  assert.equal(bban.length, spec.chars - 4, `BBAN format of ${country}`);
  const numeric = (bban + country + '00').replace(/[A-Z]/g, (c) => String(c.charCodeAt(0) - 55));
  const check = String(98n - (BigInt(numeric) % 97n)).padStart(2, '0');
  return country + check + bban;
}

// In the SWIFT IBAN registry since 2021-2023, not (yet) marked so by ibantools.
const JOINED_RECENTLY = new Set(['BI', 'DJ', 'FK']);

test('scan_pii finds IBANs of every registry country ibantools knows, at its length, with its checksum', async () => {
  const rnd = random(7);
  const specs = Object.entries(ibantools.countrySpecs).filter(([, s]) => s.chars && s.bban_regexp);
  const cases = [];
  for (const [country, spec] of specs) {
    const iban = ibanFor(country, spec, rnd);
    // ibantools agrees format, length and checksum are right (some countries
    // also have national check digits, which scan_pii does not check)
    const errors = ibantools.validateIBAN(iban).errorCodes;
    assert.deepEqual(errors.filter((e) => e !== ibantools.ValidationErrorsIBAN.WrongAccountBankBranchChecksum), [],
      `ibantools errors for ${iban}`);
    // one digit changed: ibantools and scan_pii must both reject it
    const digits = [...iban].map((c, k) => (k >= 2 && /[0-9]/.test(c) ? k : -1)).filter((k) => k >= 0);
    const pos = digits[Math.floor(rnd() * digits.length)];
    const altered = iban.slice(0, pos) + ((Number(iban[pos]) + 1) % 10) + iban.slice(pos + 1);
    assert.ok(ibantools.validateIBAN(altered).errorCodes.includes(ibantools.ValidationErrorsIBAN.WrongIBANChecksum));
    cases.push({ country, registry: spec.IBANRegistry === true || JOINED_RECENTLY.has(country), iban, altered });
  }
  const db = await connect('safety_reference');
  try {
    const found = await kindsOf(db, cases.map((c) => `transfer to ${c.iban} please`));
    const grouped = await kindsOf(db, cases.map((c) => `transfer to ${c.iban.replace(/(.{4})(?=.)/g, '$1 ')} please`));
    const altered = await kindsOf(db, cases.map((c) => `transfer to ${c.altered} please`));
    let registry = 0;
    cases.forEach((c, i) => {
      registry += c.registry;
      assert.equal(found[i].includes('iban'), c.registry, `${c.country}: ${c.iban} (registry: ${c.registry})`);
      assert.equal(grouped[i].includes('iban'), c.registry, `${c.country} grouped`);
      assert.ok(!altered[i].includes('iban'), `${c.country}: altered ${c.altered}`);
    });
    assert.ok(registry >= 80, `${registry} registry countries checked`);
  } finally {
    await db.end();
  }
});

// A random candidate IP address: valid or not, in many shapes.
function ipCandidate(rnd) {
  const pick = (list) => list[Math.floor(rnd() * list.length)];
  const hex = () => Math.floor(rnd() * 0x10000).toString(16).slice(0, 1 + Math.floor(rnd() * 4));
  const octet = () => String(pick([Math.floor(rnd() * 256), Math.floor(rnd() * 400), 0, 255, 256]));
  switch (Math.floor(rnd() * 6)) {
    case 0: return [octet(), octet(), octet(), octet()].join('.');
    case 1: return [octet(), octet(), octet(), '0' + Math.floor(rnd() * 10)].join('.');
    case 2: {
      const n = pick([7, 8, 8, 9]);
      return Array.from({ length: n }, hex).join(':');
    }
    case 3: {
      const left = Array.from({ length: Math.floor(rnd() * 5) }, hex).join(':');
      const right = Array.from({ length: Math.floor(rnd() * 5) }, hex).join(':');
      return `${left}::${right}`;
    }
    case 4: return `::ffff:${[octet(), octet(), octet(), octet()].join('.')}`;
    default: {
      const groups = Array.from({ length: pick([5, 6, 7]) }, hex).join(':');
      return `${groups}:${[octet(), octet(), octet(), octet()].join('.')}`;
    }
  }
}

test('scan_pii finds exactly the IP addresses Node\'s net.isIP accepts', async () => {
  const rnd = random(2024);
  const candidates = [...new Set(Array.from({ length: 600 }, () => ipCandidate(rnd)))];
  const db = await connect('safety_reference');
  try {
    const found = await kindsOf(db, candidates.map((c) => `host ${c} is up`));
    let valid = 0;
    candidates.forEach((c, i) => {
      // the whole is an address, or what follows its last colon is an IPv4
      // address (as in "server:10.0.0.1", which scan_pii reports too)
      // ("::" alone, with no hex digit, is not reported)
      const expected = (net.isIP(c) !== 0 && /[0-9a-f]/i.test(c)) ||
        (c.includes(':') && net.isIPv4(c.slice(c.lastIndexOf(':') + 1)));
      valid += expected;
      assert.equal(found[i].includes('ip_address'), expected, `candidate ${c} (net.isIP: ${net.isIP(c)})`);
    });
    assert.ok(valid > 150 && valid < candidates.length - 150, `a mix of valid (${valid}) and invalid addresses`);
  } finally {
    await db.end();
  }
});
