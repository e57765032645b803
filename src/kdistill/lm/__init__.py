"""Language-model distillation: real text in token blocks, causal LMs as per-position scores,
the teacher's top-k logits cached, held-out perplexity, and sequence-level KD.

The losses themselves are kdistill methods (`forward_kl`, `reverse_kl`, `jsd` in
methods/token_level.py) and training is kdistill's one loop (`Distiller`); this package supplies
what is particular to text and language models.
"""

from kdistill.lm.corpus import (
                                IGNORE_INDEX,
                                TokenBlocks,
                                encode_stream,
                                load_tokenizer,
                                read_lines,
                                special_ids,
                                split_blocks,
                                train_tokenizer,
)
from kdistill.lm.data import TextCorpus, text_corpus
from kdistill.lm.detect import is_lm_run
from kdistill.lm.metrics import perplexity, training_tokens_per_second
from kdistill.lm.models import CausalLMScores, causal_lm, count_parameters, token_scores, unwrap
from kdistill.lm.sequence_kd import generate_blocks
from kdistill.lm.topk_cache import TopKCache, fill_temperature, open_topk_cache, teacher_identity, use_cache

__all__ = ["IGNORE_INDEX", "CausalLMScores", "TextCorpus", "TokenBlocks", "TopKCache", "causal_lm", "count_parameters",
           "encode_stream", "fill_temperature", "generate_blocks", "is_lm_run", "load_tokenizer", "open_topk_cache",
           "perplexity", "read_lines", "special_ids", "split_blocks", "teacher_identity", "text_corpus", "token_scores",
           "train_tokenizer", "training_tokens_per_second", "unwrap", "use_cache"]
