"""Do today's decoders choose what the decoders of an earlier commit chose?

The decoders were rewritten (chat.infer.search: one loop, `Search` objects). This script loads
the earlier commit's `decode.py` (and the int8 module it imports) from git into a temporary
module and decodes the same queries with both, on a trained run:

- greedy and beam 5 (`--decoder greedy|beam`): must be identical, tokens and scores;
- the default decoder (beam 8 + 8 samples, MMI): today's decodes the beam and the samples in
  one loop, the earlier `--exact` path decoded them apart; same seed.

    python bench/decode_parity.py --run RUN [--split test] [--baseline-rev 7c19092]
"""

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from torchtutor.chat import run_dir as rd
from torchtutor.chat.evaluate import split_pairs
from torchtutor.chat.infer.chatbot import Chatbot
from torchtutor.chat.infer.options import BEST_DECODING, DecodeOptions

REPO = Path(__file__).resolve().parents[1]
OLD_FILES = {"old_decode": "src/torchtutor/chat/infer/decode.py",
             "old_int8": "src/torchtutor/chat/fast/int8.py"}


def load_baseline(rev: str):
    """The earlier decode.py as a module (its int8 import pointed at the earlier int8.py)."""
    folder = Path(tempfile.mkdtemp(prefix="decode-parity-"))
    for name, path in OLD_FILES.items():
        text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout
        text = text.replace("from torchtutor.chat.fast.int8 import", "from old_int8 import")
        (folder / f"{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("old_decode", folder / "old_decode.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_decode"] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained chat run with RUN/backward")
    parser.add_argument("--split", default="test", help="held-out split (default: test)")
    parser.add_argument("--baseline-rev", default="7c19092",
                        help="the commit whose decode.py is compared (default: %(default)s, "
                             "the last one before the rewrite)")
    parser.add_argument("--limit", type=int, default=0, help="first N queries, 0: all")
    args = parser.parse_args()
    old = load_baseline(args.baseline_rev)
    bot = Chatbot.load(args.run, "cpu")
    old_bot = old.load_bot(args.run, "cpu", exact=True)
    queries = [q for q, _ in split_pairs(args.run, rd.read_config(args.run), args.split)]
    queries = queries[:args.limit] if args.limit else queries
    decoders = {"greedy": DecodeOptions(), "beam 5": DecodeOptions(method="beam", beam_size=5),
                "default (beam 8 + 8 samples, mmi)": BEST_DECODING}
    print(f"{len(queries)} {args.split} queries of {args.run}; baseline {args.baseline_rev}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, options in decoders.items():
        new = bot.reply_batch(queries, options)
        before = old.reply_batch(old_bot, queries, options)
        same = sum(a.words == b.words for a, b in zip(new, before, strict=True))
        gap = max(abs(a.score - b.score) for a, b in zip(new, before, strict=True)
                  if a.words == b.words)
        print(f"{name:<36} same reply {same}/{len(queries)}, largest score difference on "
              f"equal replies {gap:.2e}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
