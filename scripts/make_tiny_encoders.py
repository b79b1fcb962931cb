"""Tiny random-weight checkpoints of every encoder architecture kroute runs, in the
sentence-transformers layout, with sentence-transformers' reference embeddings, for the parity
tests that need no hub and no real weights (tests/architectures.rs).

For each architecture (BERT with CLS pooling and a named prompt, like bge; XLM-RoBERTa with mean
pooling and a default `query` prompt, like multilingual-e5; MPNet with mean pooling and
last-token references; Qwen3 with grouped-query attention, a head size that is not
hidden/heads, last-token pooling, an EOS-appending tokenizer that pads on the left and an
instruction prompt, like Qwen3-Embedding) it trains a small tokenizer of the architecture's kind
on the parity texts, builds a 2-layer model with every parameter random (biases and norms
included, so none of them can be silently dropped), saves Transformer + Pooling + Normalize
with max_seq_length 48 (so the long texts are truncated), and records the embeddings of the
parity texts. It also records transformers' MPNet relative-position buckets for distances up to
600.

Run (not in CI):
    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install sentence-transformers
    /tmp/ref/bin/python scripts/make_tiny_encoders.py
Writes tests/fixtures/tiny/<architecture>/ (a few hundred KB in all).
"""

import json
import pathlib
import shutil
import sys
import tempfile

import torch
import transformers
from sentence_transformers import SentenceTransformer, models
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import BPE, Unigram, WordPiece
from transformers import PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from parity_texts import TEXTS  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "tiny"
MAX_SEQ_LENGTH = 48
SHAPE = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_act="gelu",
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
# Extra training text so the vocabularies hold more than the test texts' own words.
CORPUS = TEXTS + [
    "Which of the following is the best answer to the question about physics, chemistry, "
    "biology, history, law, medicine, mathematics, programming or geography?",
    "Write a Python function that returns the sum of the squares of a list of integers.",
]


def wordpiece(specials: list[str], cls: str, sep: str) -> Tokenizer:
    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials)
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )
    return tokenizer


def unigram() -> Tokenizer:
    """A SentencePiece-style tokenizer with XLM-R's special tokens: <s>=0, <pad>=1, </s>=2."""
    tokenizer = Tokenizer(Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        unk_token="<unk>",
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tokenizer


def byte_bpe() -> Tokenizer:
    """A byte-level BPE tokenizer like Qwen's, appending <|endoftext|> to every text."""
    tokenizer = Tokenizer(BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    eos = tokenizer.token_to_id("<|endoftext|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", eos)]
    )
    return tokenizer


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random: norm gains around 1, everything else around 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "LayerNorm.weight" in name or name.endswith("norm.weight"):
                parameter.copy_(1.0 + 0.2 * noise)
            elif "relative_attention_bias" in name:
                parameter.copy_(1.0 * noise)
            else:
                parameter.copy_(0.2 * noise)


def build(name: str, config, model_class, tokenizer: Tokenizer, special: dict, pooling: str,
          prompts: dict, default_prompt_name, seed: int) -> SentenceTransformer:
    hf = tempfile.mkdtemp()
    model = model_class(config)
    randomise(model, seed)
    model.save_pretrained(hf)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special).save_pretrained(hf)
    transformer = models.Transformer(hf, max_seq_length=MAX_SEQ_LENGTH)
    st = SentenceTransformer(
        modules=[
            transformer,
            models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode=pooling),
            models.Normalize(),
        ],
        device="cpu",
        prompts=prompts,
        default_prompt_name=default_prompt_name,
    )
    target = OUT / name
    shutil.rmtree(target, ignore_errors=True)
    st.save(str(target))
    # Only what an embedding model needs: no README, no vocab copies.
    for extra in ["README.md"]:
        (target / extra).unlink(missing_ok=True)
    shutil.rmtree(hf)
    return SentenceTransformer(str(target), device="cpu")


def encode(st: SentenceTransformer, **kwargs) -> list[list[float]]:
    return st.encode(TEXTS, batch_size=8, convert_to_numpy=True, **kwargs).astype("float32").tolist()


def write_reference(name: str, st: SentenceTransformer, embeddings: dict) -> None:
    tokens = [len(st.tokenizer(t)["input_ids"]) for t in TEXTS]
    reference = {
        "architecture": name,
        "max_seq_length": st.max_seq_length,
        "transformers": transformers.__version__,
        "texts": TEXTS,
        "untruncated_tokens": tokens,
        "embeddings": embeddings,
    }
    (OUT / name / "reference.json").write_text(json.dumps(reference))
    print(f"{name}: {sorted(tokens)[-5:]} longest token counts, {list(embeddings)}")


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)

    # BERT, bge-style: CLS pooling, a named query prompt that is not the default.
    bert_tokens = wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[CLS]", "[SEP]")
    config = transformers.BertConfig(
        vocab_size=bert_tokens.get_vocab_size(), max_position_embeddings=64, type_vocab_size=2,
        layer_norm_eps=1e-12, **SHAPE)
    st = build("bert", config, transformers.BertModel, bert_tokens,
               dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                    mask_token="[MASK]"),
               "cls", {"query": "Represent this question: "}, None, seed=1)
    write_reference("bert", st, {
        "plain": encode(st),
        "query": encode(st, prompt_name="query"),
    })

    # XLM-RoBERTa, multilingual-e5-style: mean pooling, positions past padding_idx, a default
    # prompt.
    xlmr_tokens = unigram()
    config = transformers.XLMRobertaConfig(
        vocab_size=xlmr_tokens.get_vocab_size(), max_position_embeddings=MAX_SEQ_LENGTH + 2 + 8,
        type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
        **SHAPE)
    st = build("xlm-roberta", config, transformers.XLMRobertaModel, xlmr_tokens,
               dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                    cls_token="<s>", sep_token="</s>", mask_token="<mask>"),
               "mean", {"query": "query: ", "passage": "passage: "}, "query", seed=2)
    write_reference("xlm-roberta", st, {
        "default": encode(st),
        "none": encode(st, prompt=""),
        "passage": encode(st, prompt_name="passage"),
    })

    # MPNet: mean pooling with relative position buckets; also last-token pooling on the same
    # weights.
    mpnet_tokens = wordpiece(["<s>", "<pad>", "</s>", "[UNK]", "<mask>"], "<s>", "</s>")
    config = transformers.MPNetConfig(
        vocab_size=mpnet_tokens.get_vocab_size(), max_position_embeddings=MAX_SEQ_LENGTH + 2 + 8,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
        relative_attention_num_buckets=32, **SHAPE)
    st = build("mpnet", config, transformers.MPNetModel, mpnet_tokens,
               dict(bos_token="<s>", eos_token="</s>", unk_token="[UNK]", pad_token="<pad>",
                    cls_token="<s>", sep_token="</s>", mask_token="<mask>"),
               "mean", {}, None, seed=3)
    last = SentenceTransformer(
        modules=[st[0], models.Pooling(32, pooling_mode="lasttoken"), models.Normalize()],
        device="cpu")
    write_reference("mpnet", st, {"mean": encode(st), "last": encode(last)})

    # Qwen3, Qwen3-Embedding-style: 4 query heads sharing 2 key/value heads, head size 16 (not
    # 32 / 4), last-token pooling, EOS appended, left padding, an instruction prompt.
    qwen_tokens = byte_bpe()
    config = transformers.Qwen3Config(
        vocab_size=qwen_tokens.get_vocab_size(), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True, attention_bias=False, hidden_act="silu")
    st = build("qwen3", config, transformers.Qwen3Model, qwen_tokens,
               dict(eos_token="<|endoftext|>", pad_token="<|endoftext|>", padding_side="left"),
               "lasttoken",
               {"query": "Instruct: Given a web search query, retrieve relevant passages that "
                         "answer the query\nQuery:"},
               None, seed=4)
    assert st.tokenizer.padding_side == "left"
    left = encode(st)
    query = encode(st, prompt_name="query")
    dim16 = encode(st, truncate_dim=16, normalize_embeddings=True)
    st.tokenizer.padding_side = "right"
    write_reference("qwen3", st, {
        "left": left, "query": query, "right": encode(st), "dim16": dim16})

    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder
    distances = torch.arange(-600, 601)
    buckets = MPNetEncoder.relative_position_bucket(distances, num_buckets=32, max_distance=128)
    (OUT / "mpnet_buckets.json").write_text(json.dumps({
        "relative": distances.tolist(), "bucket": buckets.tolist()}))


if __name__ == "__main__":
    main()
