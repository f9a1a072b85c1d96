// Sesami canonical JSON vectors computed by Node.js itself, independently of the Rust code: the
// body text is parsed with JSON.parse (every number becomes a double), the keys of `data` are
// inserted into a new object in sort() order, and JSON.stringify writes it, as Sesami does.
// Run: node tests/vectors/sesami.js — the printed values are the ones in shared/src/sesami.rs.
const crypto = require("crypto");

const SECRET = "sesami-test-secret";

function canonical(data) {
  const sorted = {};
  for (const k of Object.keys(data).sort()) sorted[k] = data[k];
  return JSON.stringify(sorted);
}

const cases = {
  // Integer-like keys come first, ascending, in nested objects and at the top level; "01" and
  // "4294967295" are not array indices, so they keep their place.
  integer_keys:
    '{"shopId":"s","10":"x","9":"y","-1":"z","z":{"b":1,"10":2,"2":3,"01":4,"a":5,"4294967295":6,"4294967294":7,"0":8}}',
  // Integers beyond 2^53 are doubles in JavaScript.
  big_integers:
    '{"shopId":"s","big":9007199254740993,"neg":-9007199254740993,"safe":9007199254740992,"u64":18446744073709551615,"bigger":123456789012345678901234567890,"e21":1000000000000000000000,"odd":9007199254740995,"list":[9007199254740993,-18446744073709551616]}',
  // sort() compares UTF-16 code units: U+1F600 (a surrogate pair, 0xD83D...) sorts before U+FF61.
  utf16_order: '{"\uff61":1,"\ud83d\ude00":2,"a":3,"shopId":"s"}',
};

for (const [name, text] of Object.entries(cases)) {
  const data = JSON.parse(text);
  const c = canonical(data);
  console.log(`${name}: ${c}`);
  console.log(`${name}: ${crypto.createHmac("sha256", SECRET).update(c, "utf8").digest("hex")}`);
}
