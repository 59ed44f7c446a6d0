"""Evaluation: perplexity for language models (BLEU/chrF and masked-token accuracy join later)."""
