#!/usr/bin/env bash
# Packages the chart of a release, so that installing it runs that release's image.
#
# Usage: deploy/package-chart.sh VERSION REPOSITORY DESTINATION
#   VERSION     the release (the git tag without its v): the chart's version and appVersion
#   REPOSITORY  where the release's image is pushed, e.g. ghcr.io/dittofs/dittofs-operator
#   DESTINATION directory that receives dittofs-operator-VERSION.tgz
#
# The image tag defaults to the chart's appVersion (values.yaml image.tag ""), so the packaged
# chart runs REPOSITORY:VERSION; its values.yaml gets REPOSITORY as image.repository. VERSION
# must be the operator's own version (Chart.yaml appVersion, which a unit test keeps equal to
# dittofs_controller.__version__): the image's `version` command reports that, and a tag that
# disagrees would ship one version labelled as another. The source tree is left untouched.
# .github/workflows/release.yaml runs it; tests/unit/test_release.py runs it with the real helm.
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 VERSION REPOSITORY DESTINATION" >&2
    exit 2
fi
version=$1 repository=$2 destination=$3
source_chart="$(cd "$(dirname "$0")" && pwd)/helm/dittofs-operator"

app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$source_chart/Chart.yaml")
if [[ $version != "$app_version" ]]; then
    echo "$0: release $version is not the operator's version $app_version (Chart.yaml appVersion," \
         "dittofs_controller.__version__): set both to $version, commit, and tag v$version" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -R "$source_chart" "$work/"
chart="$work/dittofs-operator"
# image.repository is values.yaml's only two-space-indented `repository:` key.
sed -i "s|^  repository: .*|  repository: $repository|" "$chart/values.yaml"
image=$(helm template release "$chart" --show-only templates/deployment.yaml \
        | sed -n 's/^ *image: "\(.*\)"$/\1/p')
if [[ $image != "$repository:$version" ]]; then
    echo "$0: the packaged chart would run $image, not $repository:$version" >&2
    exit 1
fi
mkdir -p "$destination"
helm package "$chart" --version "$version" --app-version "$version" --destination "$destination"
