"""Who is calling (principals and their credentials) and how much they may do (limits)."""
