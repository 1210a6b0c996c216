"""fp8rl's byte-level BPE tokenizer against HF `tokenizers`: small tokenizers are trained here
(Qwen2's Split regex + ByteLevel, GPT-2's ByteLevel regex, Llama 3's regex with ignore_merges,
special and added tokens), saved as tokenizer.json, and fp8rl_tokenize must give the same ids and
the same decoded text (with and without skip_special_tokens) on a varied corpus."""
import json
import os
import random
import subprocess

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import trainers

QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3 = QWEN2.replace(r"\p{N}|", r"\p{N}{1,3}|")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TRAIN = [
    "The quick brown fox jumps over the lazy dog. It's 2024; we'll see what they've done!",
    "def main():\n    return x + 1  # comment\n\n\nclass Foo(Bar):\n\tpass\n",
    "Café, naïve, résumé, Ångström, über, señor, façade — «quotes» and ‘single’.",
    "中文分词测试，这是一个句子。日本語のテキストも少し。한국어 문장입니다.",
    "Numbers: 3.14159, 1,000,000, 42nd, 2³, ½, ٣٤٥, and phone +1-555-0100.",
    "Emoji 😀🎉👍🏽 mixed with text 🚀 rockets; family 👨‍👩‍👧.",
    "<|im_start|>user\nHello there!<|im_end|>\n"
    "<|im_start|>assistant\nHi! How can I help?<|im_end|>",
    "   leading spaces, trailing spaces   \r\n windows line\r\nendings\n\n\n",
    "URLs like https://example.com/a_b?c=d&e=f#g and emails a.b@c.de",
    "I'M SHOUTING, YOU'RE WHISPERING, THEY'LL LISTEN; she'd, he's, we've.",
] * 3

TEST = TRAIN[:10] + [
    "",
    " ",
    "\n",
    "a",
    "    indented\n        more\n",
    "tabs\t\tand\t spaces \t\n",
    "trailing  ",
    "x  y   z",
    "!!!???...",
    "(parens) [brackets] {braces} <angles>",
    "12345678901234567890",
    "3x4=12, 1e-5, 0xFF, 007",
    "éàü ÉÀÜ ñ ç ß ø",
    "日本語 中文 한국어 ภาษาไทย العربية עברית Ελληνικά Русский",
    "🙂🙃 👩🏿‍💻 🇺🇸 ✅ ❤️",
    "<|endoftext|>",
    "text<|im_end|>more<|im_start|><|endoftext|>",
    "<|im_start|> spaced <|im_end|>\n",
    "<think>reasoning</think> answer",
    "half<|im_sta",
    "DON'T don't Don'T 's 't",
    "\r\n\r\n\n \n  \n",
    "mixed\u00a0nbsp\u3000ideographic\u2003em",
    "ſ long s's",
    "zero\u200bwidth",
]


def random_texts(n, seed):
    pool = (list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789") + list(" \t\n\r  ") +
            list(".,;:!?'\"-_()[]{}<>/\\@#$%^&*+=|~`") + list("éüñçßåøÉÅ") +
            list("中文字日本語한국") + ["😀", "🎉", "👍🏽", "🚀"] + ["'s", "'ll", "<|im_end|>"])
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def train(kind, alphabet=True):
    if kind == "gpt2":
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        model = models.BPE()
    else:
        regex = QWEN2 if kind == "qwen2" else LLAMA3
        pre = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        model = models.BPE(ignore_merges=(kind == "llama3"))
    tok = Tokenizer(model)
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if alphabet else [])
    tok.train_from_iterator(TRAIN, trainer)
    tok.add_tokens([AddedToken("<think>", special=False), AddedToken("</think>", special=False)])
    return tok


@pytest.fixture(scope="module")
def tool():
    path = os.environ.get("FP8RL_TOKENIZE")
    if not path or not os.path.exists(path):
        pytest.fail("FP8RL_TOKENIZE (path of fp8rl_tokenize) is not set; run through ctest")
    return path


def run_tool(tool, path, lines):
    p = subprocess.run([tool, path], input="".join(json.dumps(x) + "\n" for x in lines),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = [json.loads(line) for line in p.stdout.split("\n")[:-1]]  # not splitlines: U+2028
    assert len(out) == len(lines)
    return out


@pytest.mark.parametrize("kind,alphabet,merge_strings", [
    ("qwen2", True, False), ("qwen2", True, True), ("gpt2", True, False),
    ("llama3", True, False), ("qwen2", False, False)])
def test_encode_decode_match_hf(tool, tmp_path, kind, alphabet, merge_strings):
    tok = train(kind, alphabet)
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    if merge_strings:  # the older "a b" form of merges (byte-level tokens hold no spaces)
        with open(path) as f:
            j = json.load(f)
        j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m)
                                for m in j["model"]["merges"]]
        with open(path, "w") as f:
            json.dump(j, f)
        tok = Tokenizer.from_file(path)
    texts = TEST + random_texts(300, seed=len(kind))
    got = run_tool(tool, path, texts)
    for text, g in zip(texts, got):
        want = tok.encode(text, add_special_tokens=False).ids
        assert g.get("ids") == want, f"{kind}: encode({text!r})"
    # Decode what was encoded, and random id sequences (cut UTF-8, unknown ids, specials).
    rng = random.Random(7)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    seqs = [g["ids"] for g in got] + [[rng.randrange(vocab + 3) for _ in range(rng.randint(0, 12))]
                                      for _ in range(300)]
    dec = run_tool(tool, path, seqs)
    for ids, d in zip(seqs, dec):
        ids_ok = [i for i in ids if i < vocab]
        assert d["text"] == tok.decode(ids_ok, skip_special_tokens=False), f"decode({ids})"
        assert d["text_skip_special"] == tok.decode(ids_ok, skip_special_tokens=True), ids


def test_malformed_tokenizer_names_field(tool, tmp_path):
    tok = train("qwen2")
    j = json.loads(tok.to_str())
    j["model"]["merges"][3] = "onlyone"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(j))
    p = subprocess.run([tool, str(path)], input="", capture_output=True, text=True)
    assert p.returncode != 0 and "model.merges[3]" in p.stderr
