# The two commands of README.md. Both set up the environment first (tools/setup_env.sh: once per
# machine, ~20 min; seconds afterwards).
.PHONY: demo test env mutation

demo:  ## set up, train VT-FPN on LIP (demo data when data/LIP is absent), test it
	bash tools/run_demo.sh

test:  ## set up, run the test suite
	bash tools/run_tests.sh

env:   ## only set up the environment; prints its path
	bash tools/setup_env.sh

mutation:  ## known bugs + mutmut over every module (ARGS="--groups ..." for some)
	bash tools/run_mutation.sh $(ARGS)
