"""What a run shares: its curated set as a Hugging Face dataset, and the cards of the set and the student."""
