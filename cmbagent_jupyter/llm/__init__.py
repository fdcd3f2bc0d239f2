"""Models: provider configuration, the offline scripted model, recording and transcripts."""
