"""The texts every parity fixture is made from: short, long (past 128, 256 and 512 tokens),
non-English, code and punctuation-only."""

SHORT = [
    "hello world",
    "Hi",
    "a",
    "What is the capital of France?",
    "How do I route LLM queries cheaply?",
    "Which model should answer this question about quantum field theory?",
    "The quick brown fox jumps over the lazy dog.",
    "Translate 'good morning' into Japanese.",
    "Is 17077 a prime number?",
    "Summarise the plot of Hamlet in two sentences.",
    "GPT-4 vs Claude: which is cheaper per token?",
    "   leading and trailing spaces   ",
    "UPPERCASE SHOUTING TEXT!!!",
    "emoji 🚀🔥 and symbols ∑ ∫ √ ≤ ≥",
    "numbers 3.14159 2.71828 1e-9 -42",
    "e-mail me at someone@example.com or visit https://example.com/a?b=c",
]
NON_ENGLISH = [
    "¿Cuál es la distancia entre la Tierra y la Luna?",
    "Wie funktioniert ein Transformator in der Elektrotechnik?",
    "Quelle est la meilleure façon d'apprendre le français ?",
    "東京で一番おいしいラーメン屋はどこですか？",
    "如何用Python实现快速排序算法？",
    "Как работает механизм внимания в трансформерах?",
    "ما هي عاصمة المملكة العربية السعودية؟",
    "नमस्ते, आप कैसे हैं?",
    "Ἐν ἀρχῇ ἦν ὁ λόγος",
    "한국어 문장 임베딩 테스트입니다.",
]
CODE = [
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "fn main() { println!(\"{}\", (1..=10).map(|x| x * x).sum::<u32>()); }",
    "#include <stdio.h>\nint main(void) { printf(\"hi\\n\"); return 0; }",
    "const add = (a, b) => a + b; export default add;",
    "Write a function that returns the longest palindromic substring of s.",
]
PUNCTUATION = [
    "?",
    "...",
    "!!!???",
    "—",
    "()[]{}<>",
    "#",
]
PARAGRAPH = (
    "Large language models differ widely in accuracy and price. A router embeds each query, "
    "finds the nearest clusters of past queries, and picks the model that did best there for "
    "the money. "
)
LONG = [
    PARAGRAPH * 2,  # ~80 tokens
    PARAGRAPH * 4,  # ~150 tokens: past the tokenizer.json's own 128 limit
    PARAGRAPH * 6,  # ~230 tokens
    PARAGRAPH * 8,  # ~300 tokens: past max_seq_length 256, truncated
    PARAGRAPH * 20,  # ~760 tokens: far past every limit
    " ".join(f"token{i}" for i in range(200)),  # many word pieces
    "Question: " + "Which of the following best explains the result? " * 12
    + "A) one B) two C) three D) four",
    "def very_long_function():\n" + "".join(f"    x{i} = {i} * {i}\n" for i in range(60)),
    "Le routage des requêtes vers les modèles de langage " * 25,
    "日本語の長い文章を繰り返します。" * 40,
]

TEXTS = SHORT + NON_ENGLISH + CODE + PUNCTUATION + LONG
