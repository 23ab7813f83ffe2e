"""Is it good? Held-out metrics beside a Markov chain and the untuned base, and the promotion gate."""
