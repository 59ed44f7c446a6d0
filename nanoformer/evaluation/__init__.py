"""Evaluation: perplexity (GPT), BLEU and chrF (translation), masked-token accuracy and classification metrics (BERT)."""
