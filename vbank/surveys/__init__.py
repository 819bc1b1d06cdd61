"""Post-contact satisfaction surveys, their signed links and the follow-up call tasks that
low scores open."""
