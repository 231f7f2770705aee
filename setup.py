"""Install the ``metapoint`` package (dependencies: ``bash scripts.sh install``)."""
import os.path as osp
import re

from setuptools import find_packages, setup


def read_version():
    with open(osp.join(osp.dirname(__file__), 'metapoint', '__init__.py'), encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def read_requirements(name):
    path = osp.join(osp.dirname(__file__), 'requirements', name)
    with open(path, encoding='utf-8') as f:
        return [ln.split('#')[0].strip() for ln in f if ln.split('#')[0].strip()]


setup(
    name='metapoint',
    version=read_version(),
    description='Category-agnostic pose estimation on MP-100: MetaPoint, FMMP and CapeFormer '
    'in an MMPose-style codebase',
    long_description=open('README.md', encoding='utf-8').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'demo', 'docs')),
    install_requires=read_requirements('runtime.txt'),
    extras_require=dict(tests=read_requirements('tests.txt')),
    zip_safe=False,
)
